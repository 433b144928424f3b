"""Gemma 3 / MedGemma: SigLIP vision tower at a fixed input size + Gemma 3 language model.

Every image is resized to the SigLIP input size (896 px for MedGemma, 112 px for the tiny model)
and becomes `<start_of_image>` + mm_tokens_per_image x `<image_soft_token>` + `<end_of_image>`.
"""

from __future__ import annotations

from pathlib import Path

from medzoo.models.family import Family, scale_output_layer
from medzoo.models.tokenizers import GEMMA_IMAGE_TOKENS, build_gemma_tokenizer

# Gemma 3's chat template (tokenizer_config.json of google/gemma-3-4b-it / medgemma-4b-it), verbatim.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

TINY_GEMMA_IMAGE = {"image_size": 112}
TINY_MM_TOKENS = 16  # 8x8 SigLIP patches pooled 2x2
POSITION_RAMP = 4.0  # see smooth_position_embeddings
OUTPUT_STD = 1.0  # see family.scale_output_layer


def perceived_size(w: int, h: int, settings: dict) -> tuple[int, int]:
    s = settings.get("image_size", 896)
    return s, s


def _tiny_gemma3_config(tok, size: int):
    from transformers import Gemma3Config

    return Gemma3Config(
        text_config=dict(
            vocab_size=len(tok),
            # 4 x 128 like the tiny Qwen2.5-VL: with phantom-tiny-gemma's curriculum the 2 x 64 LM got
            # 81% held out, this one 91% (location 100%; benchmarks/RESULTS.md, Learning).
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,  # vLLM's CPU attention has no kernel for head_dim 16
            query_pre_attn_scalar=32,
            sliding_window=64,
            layer_types=["sliding_attention", "full_attention"] * 2,
            max_position_embeddings=4096,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=size,
            patch_size=14,
            vision_use_head=False,
        ),
        mm_tokens_per_image=TINY_MM_TOKENS,
        boi_token_index=tok.convert_tokens_to_ids(GEMMA_IMAGE_TOKENS["boi_token"]),
        eoi_token_index=tok.convert_tokens_to_ids(GEMMA_IMAGE_TOKENS["eoi_token"]),
        image_token_index=tok.convert_tokens_to_ids(GEMMA_IMAGE_TOKENS["image_token"]),
        # Untied (MedGemma ties them): with a tied head the residual stream, dominated by the
        # current token's own embedding, makes a random tiny model predict its input token with a
        # huge margin (loss ~32 that LoRA could not bring down in 1500 steps). Untied, the output
        # layer can get the scale it needs (family.scale_output_layer) without touching the inputs.
        tie_word_embeddings=False,
    )


def build_tiny_gemma3(folder: Path, seed: int) -> None:
    import torch
    from transformers import Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    tok = build_gemma_tokenizer(folder)
    size = TINY_GEMMA_IMAGE["image_size"]
    cfg = _tiny_gemma3_config(tok, size)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(cfg)
    with torch.no_grad():
        # transformers 5.19 leaves the projector at zero: every image would embed to zero.
        proj = model.model.multi_modal_projector
        proj.mm_input_projection_weight.normal_(0.0, 64**-0.5)
        smooth_position_embeddings(model.model.vision_tower.embeddings.position_embedding.weight, POSITION_RAMP, seed)
    scale_output_layer(model, OUTPUT_STD)
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = [tok.eos_token_id, end_of_turn]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    use_hub_vision_layout(folder)

    image_processor = Gemma3ImageProcessor(size={"height": size, "width": size})
    proc = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=TINY_MM_TOKENS,
    )
    proc.save_pretrained(folder)


def smooth_position_embeddings(weight, scale: float, seed: int) -> None:
    """Set SigLIP's position table to two linear ramps, column and row, in two random directions.

    A trained SigLIP's position embeddings vary smoothly over the patch grid; random ones (the
    default init, or N(0, 0.5) as before) give each patch an unrelated vector, so "left of centre"
    is a 16-way lookup for the language model instead of one direction. With the ramps it is one
    direction (and survives the projector's average pooling of patches): on phantom-tiny-gemma the
    ramp lifted held-out accuracy from 78% to 85% (location from 12% to 56%), and with the
    location-first curriculum location reached 100% (88% with the old random table; one run each).
    """
    import math

    import torch

    n, dim = weight.shape
    side = math.isqrt(n)
    directions, _ = torch.linalg.qr(torch.randn(dim, 2, generator=torch.Generator().manual_seed(seed + 1)))
    index = torch.arange(n)
    centre = (side - 1) / 2
    col = (index % side - centre) / centre  # -1 (left) .. 1 (right)
    row = (index // side - centre) / centre  # -1 (top) .. 1 (bottom)
    with torch.no_grad():
        weight.copy_(scale * (col[:, None] * directions[:, 0] + row[:, None] * directions[:, 1]))


GEMMA3 = Family(
    name="gemma3",
    model_types=("gemma3",),
    image_tokens=tuple(GEMMA_IMAGE_TOKENS.values()),
    end_of_turn="<end_of_turn>",
    vision_prefixes=("model.vision_tower", "model.multi_modal_projector"),
    language_prefix="model.language_model",
    perceived_size=perceived_size,
    build_tiny=build_tiny_gemma3,
    tiny_image_settings=TINY_GEMMA_IMAGE,
    after_save=lambda folder: use_hub_vision_layout(folder),
    converter_files=("tokenizer.model",),
)


def use_hub_vision_layout(folder: Path) -> int:
    """Rename `vision_tower.*` weights to `vision_tower.vision_model.*` in a saved Gemma 3 folder.

    transformers 5.19 saves the SigLIP tower as `vision_tower.*`, but vLLM and llama.cpp's GGUF
    converter expect the layout of the Hub checkpoints (`vision_tower.vision_model.*`), which
    transformers also loads. Returns how many tensors were renamed (0 if already in Hub layout).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    def hub_key(key: str) -> str:
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            return "vision_tower.vision_model." + key[len("vision_tower.") :]
        return key

    renamed = 0
    for shard in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            metadata = f.metadata()
            tensors = {}
            for key in f.keys():
                renamed += hub_key(key) != key
                tensors[hub_key(key)] = f.get_tensor(key)
        if renamed:
            tmp = shard.with_suffix(".tmp")
            save_file(tensors, tmp, metadata=metadata)
            tmp.replace(shard)
    index = Path(folder) / "model.safetensors.index.json"
    if renamed and index.exists():
        import json

        data = json.loads(index.read_text())
        data["weight_map"] = {hub_key(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
    return renamed
