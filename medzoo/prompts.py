"""The one place where an example becomes chat messages.

Training and every evaluation engine call `build_messages` and then the family's chat template, so
the prompt a model is trained on is byte-identical to the one it is benchmarked with.

Measurement tasks use MedVision's layout (Task / Additional information / Format requirement) and
state the pixel size of the image the model actually sees, after the family's resize.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from medzoo.errors import InvalidValue

PROMPT_MODES = ("none", "static", "adaptive")

DEFAULT_STATIC_PROMPT = (
    "You are an expert medical imaging assistant. Look carefully at the image and answer the "
    "question precisely and briefly, using the exact answer format requested."
)

# Adaptive routing: question keywords -> a category prompt appended to the system prompt once.
DEFAULT_ADAPTIVE_CATEGORIES = {
    "instrument": (
        ["instrument", "tool", "forceps", "snare", "device"],
        "Instruments are metallic grey, elongated and usually enter from the image border.",
    ),
    "colour": (["colour", "color"], "Name the dominant colour of the finding in one word."),
    "counting": (["how many", "count", "number of"], "Count each separate finding once; answer with a digit."),
    "location": (["where", "quadrant", "located", "location"], "Answer with the quadrant, e.g. upper-left."),
    "size": (["size", "large", "big", "small"], "Classify the finding's size as small, medium or large."),
    "presence": (["is there", "are there", "any abnormal", "present"], "Answer yes or no."),
    "measurement": (
        ["distance", "angle", "millimet", "axis", "length"],
        "Use the stated pixel size to convert pixel lengths to millimetres.",
    ),
    "detection": (["bounding box", "box", "locate"], "Give normalised coordinates in [0, 1]."),
}

FORMAT_REQUIREMENTS = {
    "distance": "Answer with the distance in millimetres as a single number with one decimal, e.g. 23.4",
    "angle": "Answer with the angle in degrees as a single number with one decimal, e.g. 47.5",
    "detection": "Answer with the box as [x1, y1, x2, y2] with two decimals, origin at the {origin} corner.",
    "lesion-size": "Answer as: major axis: <number> mm, minor axis: <number> mm",
}


@dataclass
class PromptSettings:
    """What a recipe says about prompts (see medzoo.recipe)."""

    static: str = DEFAULT_STATIC_PROMPT
    adaptive: dict = field(
        default_factory=lambda: {k: {"keywords": v[0], "prompt": v[1]} for k, v in DEFAULT_ADAPTIVE_CATEGORIES.items()}
    )
    train_mode: str = "none"  # which prompt mode training uses


def route(question: str, categories: dict) -> list[str]:
    """Categories whose keywords occur in the question, in the recipe's order."""
    q = question.lower()
    return [name for name, cat in categories.items() if any(k.lower() in q for k in cat["keywords"])]


def system_prompt(question: str, mode: str, settings: PromptSettings) -> tuple[str | None, list[str]]:
    """The system prompt for `mode` and the adaptive routes chosen (empty unless adaptive)."""
    if mode == "none":
        return None, []
    if mode == "static":
        return settings.static, []
    if mode == "adaptive":
        routes = route(question, settings.adaptive)
        extra = [settings.adaptive[r]["prompt"] for r in routes]
        return "\n".join([settings.static, *extra]), routes
    raise InvalidValue(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")


def user_text(
    example: dict, perceived_size: tuple[int, int] | None = None, native_size: tuple[int, int] | None = None
) -> str:
    """The user turn's text. Measurement tasks get MedVision's Task / Additional information /
    Format requirement layout with the pixel size of the image as the model perceives it."""
    task = example.get("task", "vqa")
    if task not in FORMAT_REQUIREMENTS:
        return example["question"]
    meta = (
        json.loads(example["metadata"]) if isinstance(example.get("metadata"), str) else example.get("metadata") or {}
    )
    # the file's own size (before any downscaling for the model): the spacing is per native pixel
    native_w, native_h = meta.get("image_size", native_size or perceived_size or (0, 0))
    if task != "detection" and not meta.get("pixel_spacing_mm"):
        # never a silent 1 mm: the answer in mm (and the prompt) would be wrong by the true spacing
        raise InvalidValue(
            f"example {example.get('id', '?')!r}: a {task} task needs the image's pixel spacing "
            "(metadata.pixel_spacing_mm [row, column] in mm, or a DICOM with PixelSpacing / a NIfTI file)"
        )
    sx, sy = meta["pixel_spacing_mm"][::-1] if task != "detection" else (1.0, 1.0)
    w, h = perceived_size or (native_w, native_h)
    # Resizing changes the physical size of one pixel: spacing scales by native / perceived.
    px_w, px_h = sx * native_w / w, sy * native_h / h
    lines = [f"Task: {example['question']}"]
    if task != "detection":
        lines.append(
            f"Additional information: the image is {w} x {h} pixels; one pixel is {px_w:.4f} mm wide and {px_h:.4f} mm high."
        )
    lines.append("Format requirement: " + FORMAT_REQUIREMENTS[task].format(origin=meta.get("box_origin", "lower-left")))
    return "\n".join(lines)


def build_messages(
    example: dict,
    mode: str = "none",
    settings: PromptSettings | None = None,
    perceived_size: tuple[int, int] | None = None,
    native_size: tuple[int, int] | None = None,
    with_answer: bool = False,
    n_images: int = 1,
) -> tuple[list[dict], list[str]]:
    """Chat messages for one example (+ the adaptive routes). Images come first in the user turn."""
    settings = settings or PromptSettings()
    system, routes = system_prompt(example["question"], mode, settings)
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    content = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": user_text(example, perceived_size, native_size)})
    messages.append({"role": "user", "content": content})
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": example["answer"]}]})
    return messages, routes


def corpus_lines() -> list[str]:
    """Prompt text, for the tiny Gemma tokenizer's training corpus."""
    lines = [DEFAULT_STATIC_PROMPT, *FORMAT_REQUIREMENTS.values()]
    for keywords, prompt in DEFAULT_ADAPTIVE_CATEGORIES.values():
        lines += [prompt, " ".join(keywords)]
    lines.append(
        "Task: Additional information: Format requirement: the image is pixels; one pixel is mm wide and high."
    )
    return lines


def render(processor, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Messages -> prompt string with the model's own chat template (training and every engine)."""
    return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
