"""Examples -> model tensors with loss only on the answer, and the batch collator.

The prompt is rendered by medzoo.prompts (the exact string the bench sends), the answer turn is
appended by the same chat template, and every position before the answer, every image/vision
token, everything after the answer's end-of-turn token, and padding get label -100.
"""

from __future__ import annotations

from dataclasses import dataclass

from medzoo.errors import InvalidValue

IGNORE = -100


@dataclass
class DropCounter:
    """Rows dropped while preparing data, by reason (reported at the end and in the manifest)."""

    unreadable_image: int = 0
    empty_answer: int = 0

    def total(self) -> int:
        return self.unreadable_image + self.empty_answer

    def as_dict(self) -> dict:
        return {"unreadable_image": self.unreadable_image, "empty_answer": self.empty_answer}

    def add(self, reason: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)

    def describe(self) -> str:
        """'2 rows dropped (unreadable_image: 1, empty_answer: 1)', or '' when none were."""
        if not self.total():
            return ""
        reasons = ", ".join(f"{k}: {v}" for k, v in self.as_dict().items() if v)
        return f"{self.total()} row(s) dropped ({reasons})"


def drop_reason(row: dict, bad_answers: set[str]) -> str | None:
    """Why an undecoded row cannot be used (a DropCounter field name), or None."""
    answer = row.get("answer")
    if answer is None or str(answer).strip().lower() in bad_answers:
        return "empty_answer"
    if not _image_ok(row.get("image")):
        return "unreadable_image"
    return None


def undecoded(ds):
    from datasets import Image as ImageFeature

    return ds.cast_column("image", ImageFeature(decode=False)) if "image" in ds.column_names else ds


def _usable_indices(ds, drop_answers: list[str], counter: DropCounter, limit: int | None = None) -> list[int]:
    """Indices of usable rows in order (at most `limit`); every row skipped on the way is counted."""
    bad_answers = {a.strip().lower() for a in drop_answers}
    keep_idx = []
    for i, row in enumerate(undecoded(ds)):
        if limit is not None and len(keep_idx) >= limit:
            break
        reason = drop_reason(row, bad_answers)
        if reason:
            counter.add(reason)
        else:
            keep_idx.append(i)
    return keep_idx


def clean_rows(ds, drop_answers: list[str], counter: DropCounter):
    """Drop rows with unreadable images or empty/'nan' answers (counted, never a crash)."""
    keep_idx = _usable_indices(ds, drop_answers, counter)
    return ds.select(keep_idx) if len(keep_idx) != len(ds) else ds


def usable_rows(ds, limit: int | None, drop_answers: list[str], counter: DropCounter) -> list[dict]:
    """The first `limit` usable rows of `ds` (all when None), decoded, with the same cleaning as
    training; rows skipped on the way are counted, so a limit is never met with fewer examples."""
    return [ds[i] for i in _usable_indices(ds, drop_answers, counter, limit)]


def _image_ok(image) -> bool:
    return image_problem(image) is None


def image_problem(image) -> str | None:
    """Why an undecoded `datasets` image cannot be used (None if it decodes)."""
    import io

    from PIL import Image

    if image is None or (not image.get("bytes") and not image.get("path")):
        return "no image"
    try:
        if image.get("bytes"):
            Image.open(io.BytesIO(image["bytes"])).load()
        else:
            Image.open(image["path"]).load()
    except FileNotFoundError:
        return f"missing file {image.get('path')}"
    except Exception as e:
        return f"does not decode ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    return None


def limit_rows(ds, limit: int | None, per_task: dict[str, int], seed: int):
    """Apply per-task limits, then an overall limit (deterministic shuffle first, so limits sample all tasks)."""
    if not per_task and not limit:
        return ds
    ds = ds.shuffle(seed=seed)
    if per_task and "task" in ds.column_names:
        seen: dict[str, int] = {}
        keep = []
        for i, task in enumerate(ds["task"]):
            cap = per_task.get(task)
            if cap is None or seen.get(task, 0) < cap:
                keep.append(i)
                seen[task] = seen.get(task, 0) + 1
        ds = ds.select(keep)
    if limit and limit < len(ds):
        ds = ds.select(range(limit))
    return ds


class Encoder:
    """Turns one example into input tensors + masked labels for a given processor and family."""

    def __init__(self, processor, family, prompt_settings, mode: str, image_settings: dict):
        self.processor = processor
        self.family = family
        self.settings = prompt_settings
        self.mode = mode
        self.image_settings = image_settings
        tok = processor.tokenizer
        self.image_token_ids = {
            i for i in tok.convert_tokens_to_ids(list(family.image_tokens)) if i is not None and i != tok.unk_token_id
        }
        self.end_id = tok.convert_tokens_to_ids(family.end_of_turn)

    def texts(self, row) -> tuple[str, str, list]:
        """(prompt, prompt + answer turn, images): the prompt is byte-identical to the bench's."""
        from medzoo.inference import example_images
        from medzoo.prompts import build_messages, render

        ex = example_images(row, self.family, self.image_settings)
        images = ex.images
        kwargs = dict(
            mode=self.mode,
            settings=self.settings,
            perceived_size=ex.perceived_size,
            native_size=ex.native_size,
            n_images=len(images),
        )
        prompt = render(self.processor, build_messages(row, **kwargs)[0], add_generation_prompt=True)
        full = render(self.processor, build_messages(row, with_answer=True, **kwargs)[0], add_generation_prompt=False)
        if not full.startswith(prompt):
            raise InvalidValue(
                f"{self.family.name}: the chat template does not render the prompt as a prefix of the answered conversation"
            )
        return prompt, full, images

    def encode(self, row) -> dict:
        prompt, full, images = self.texts(row)
        enc = self.processor(text=[full], images=images, return_tensors="np")
        n_prompt = self.processor(text=[prompt], images=images, return_tensors="np")["input_ids"].shape[1]
        ids = enc["input_ids"][0].tolist()
        labels = self.labels(ids, n_prompt)
        out = {"input_ids": ids, "labels": labels}
        for key, value in enc.items():
            if key in ("input_ids",):
                continue
            out[key] = value[0].tolist() if key in ("attention_mask", "token_type_ids", "mm_token_type_ids") else value
        return out

    def labels(self, ids: list[int], n_prompt: int) -> list[int]:
        labels = [IGNORE] * len(ids)
        for i in range(n_prompt, len(ids)):
            if ids[i] in self.image_token_ids:
                continue
            labels[i] = ids[i]
            if ids[i] == self.end_id:
                break  # the answer ends with the end-of-turn token; what the template adds after it is not learned
        return labels


@dataclass(frozen=True)
class PixelCodec:
    """Processor pixels <-> the uint8 values they were computed from, 4x smaller on disk, bit-exact.

    An image processor resizes 8-bit images, then rescales (x / 255) and normalises per channel
    ((x - mean) / std), so each float is one of 256 values per channel and the uint8 value is
    recovered exactly. Both pixel layouts put the channel on axis 1 of `reshape(n, 3, -1)`: Gemma's
    (images, 3, H, W) and Qwen's (patches, 3 x temporal x patch x patch). `decode` repeats the
    arithmetic of transformers' torchvision backend (rescale fused into mean and std, float32), so
    training sees the very floats the processor made; `encode` refuses pixels it cannot give back
    bit for bit (another processor's arithmetic), never storing an approximation.

    MedGemma's 896 px pixels are 9.6 MB per example in float32 and 2.4 MB here: the Kvasir
    recipe's 5000 rows ~48 GB -> ~12 GB. (Keeping only the source image would be smaller still but
    re-runs the processor every step: 219 ms per batch of 8 for tiny Qwen's, as long as a step.)"""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float

    @classmethod
    def of(cls, image_processor) -> PixelCodec | None:
        ip = image_processor
        if not (getattr(ip, "do_rescale", False) and getattr(ip, "do_normalize", False)):
            return None
        mean, std = list(ip.image_mean), list(ip.image_std)
        if len(mean) != 3 or len(std) != 3:
            return None
        return cls(tuple(map(float, mean)), tuple(map(float, std)), float(ip.rescale_factor))

    def encode(self, pixels):
        """uint8 values that decode to exactly `pixels`, or None when there are none."""
        import numpy as np

        mean, std = np.array(self.mean)[None, :, None], np.array(self.std)[None, :, None]
        x = (pixels.reshape(pixels.shape[0], 3, -1).astype(np.float64) * std + mean) / self.scale
        q = np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(pixels.shape)
        return q if np.array_equal(self.decode(q), pixels) else None

    def decode(self, values):
        import torch

        # As transformers' TorchvisionBackend.rescale_and_normalize computes it (float32, fused).
        mean = torch.tensor(self.mean) * (1.0 / self.scale)
        std = torch.tensor(self.std) * (1.0 / self.scale)
        x = torch.as_tensor(values).reshape(values.shape[0], 3, -1).to(torch.float32)
        return ((x - mean[None, :, None]) / std[None, :, None]).reshape(values.shape).numpy()


def encode_dataset(ds, encoder: Encoder, desc: str = "preprocess"):
    """Map a cleaned dataset through the encoder into a tensor-ready `datasets.Dataset` (pixels as
    uint8 where the processor's PixelCodec holds, float32 otherwise)."""
    import numpy as np

    codec = PixelCodec.of(encoder.processor.image_processor)

    def fn(row):
        out = encoder.encode(row)
        if codec is not None and isinstance(out.get("pixel_values"), np.ndarray):
            values = codec.encode(out["pixel_values"])
            if values is None:
                raise InvalidValue(
                    f"{type(encoder.processor.image_processor).__name__}: its pixels are not 8-bit values rescaled "
                    "and normalised per channel, which medzoo's preprocessed cache stores"
                )
            out["pixel_values"] = values
        return {
            k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in out.items()
        }

    keep = ["id", "task"]
    remove = [c for c in ds.column_names if c not in keep]
    return ds.map(fn, remove_columns=remove, desc=desc, load_from_cache_file=False, keep_in_memory=False)


class Collator:
    """Pads token columns (right), concatenates Qwen patches / stacks Gemma images, and turns
    uint8 pixels from the cache back into the processor's floats (`codec`)."""

    def __init__(self, pad_id: int, codec: PixelCodec | None = None):
        self.pad_id = pad_id
        self.codec = codec

    @classmethod
    def for_processor(cls, processor) -> Collator:
        """The collator for data this processor encoded (its pad token, its pixel codec)."""
        return cls(processor.tokenizer.pad_token_id, PixelCodec.of(processor.image_processor))

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        longest = max(len(r["input_ids"]) for r in rows)
        batch = {}
        pads = {
            "input_ids": self.pad_id,
            "labels": IGNORE,
            "attention_mask": 0,
            "token_type_ids": 0,
            "mm_token_type_ids": 0,
        }
        for key, pad in pads.items():
            if key in rows[0]:
                batch[key] = torch.tensor(
                    [list(r[key]) + [pad] * (longest - len(r[key])) for r in rows], dtype=torch.long
                )
        if "pixel_values" in rows[0]:
            pv = [torch.as_tensor(self._pixels(r["pixel_values"]), dtype=torch.float32) for r in rows]
            # Qwen: (patches, dim) per example -> concatenated; Gemma: (n_img, 3, H, W) -> concatenated.
            batch["pixel_values"] = torch.cat(pv, dim=0)
        if "image_grid_thw" in rows[0]:
            batch["image_grid_thw"] = torch.cat(
                [torch.as_tensor(r["image_grid_thw"], dtype=torch.long) for r in rows], dim=0
            )
        return batch

    def _pixels(self, values):
        import numpy as np

        values = np.asarray(values)
        if values.dtype.kind not in "ui":  # datasets' numpy format hands the stored uint8 back as int64
            return values
        if self.codec is None:
            raise InvalidValue("preprocessed pixels are uint8 but the collator was given no PixelCodec to decode them")
        return self.codec.decode(values)
