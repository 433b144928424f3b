"""Batched greedy generation with transformers (left padding): the reference engine."""

from __future__ import annotations


def generate(
    model,
    processor,
    prompts: list[str],
    images: list[list],
    max_new_tokens: int,
    stop_ids: list[int],
    batch_size: int = 8,
    progress: bool = False,
) -> list[str]:
    import torch
    from tqdm.auto import tqdm

    from medzoo.models.loading import greedy_generation_config
    from medzoo.models.placement import to_model

    # Every caller decodes greedily with no penalty from the model's generation_config (training's
    # held-out evaluation too); under peft, generate() reads the wrapped model's config.
    greedy_generation_config(model.get_base_model() if hasattr(model, "get_base_model") else model)

    tok = processor.tokenizer
    tok.padding_side = "left"
    outputs: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate (hf)", disable=not progress):
        batch_prompts = prompts[start : start + batch_size]
        batch_images = images[start : start + batch_size]
        inputs = processor(text=batch_prompts, images=batch_images, return_tensors="pt", padding=True)
        inputs = to_model(inputs, model)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop_ids,
                pad_token_id=tok.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        outputs += tok.batch_decode(new, skip_special_tokens=True)
    return outputs


class HFEngine:
    """transformers (+ peft for an adapter): the reference the other engines are checked against."""

    def __init__(self, model, processor, stop_ids: list[int], batch_size: int = 16):
        self.model, self.processor, self.stop_ids, self.batch_size = model, processor, stop_ids, batch_size

    @classmethod
    def load(cls, model_path: str, processor, stop_ids: list[int], adapter: str | None = None, batch_size: int = 16):
        from medzoo.models.loading import load_model

        model = load_model(model_path)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        return cls(model, processor, stop_ids, batch_size)

    def generate(self, requests, max_new_tokens: int) -> list[str]:
        if any(r.adapter for r in requests):
            raise ValueError("HFEngine answers with the one model it loaded; load another engine per adapter")
        prompts, images = [r.prompt for r in requests], [r.images for r in requests]
        return generate(self.model, self.processor, prompts, images, max_new_tokens, self.stop_ids, self.batch_size)

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
