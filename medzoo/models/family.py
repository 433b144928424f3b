"""What medzoo needs to know about a VLM family, and the registry of families.

A family module (qwen_vl.py, gemma3.py) describes one architecture: its image/vision special
tokens (masked out of the loss), its end-of-turn token, how its processor resizes images (so the
prompt can state the pixel size the model perceives), where its vision tower lives (kept out of
LoRA and 4-bit quantisation), and how to build a tiny random-weight copy for the embedded zoo.
Adding a family is one module defining its `Family` plus one line in medzoo/models/registry.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values that belong to this family
    image_tokens: tuple[str, ...]  # every image/vision special token: never carries loss
    end_of_turn: str  # generation stops here; the assistant answer ends with it
    vision_prefixes: tuple[str, ...]  # module-name prefixes of vision tower + projector
    language_prefix: str  # module-name prefix of the language model
    perceived_size: Callable[[int, int, dict], tuple[int, int]]  # (w, h, image settings) -> model input size
    build_tiny: Callable[[Path, int], None] | None = None  # write a tiny random model folder
    tiny_image_settings: dict = field(default_factory=dict)
    supports_multi_image: bool = True
    # Fix-ups after save_pretrained so other tools read the folder (Gemma 3: Hub weight layout).
    after_save: Callable[[Path], int] | None = None
    # Base-model files transformers 5 does not save but llama.cpp's converter reads (Gemma 3's
    # SentencePiece tokenizer.model): copied into a merged folder from the base (folder or Hub).
    converter_files: tuple[str, ...] = ()


def scale_output_layer(model, std: float) -> None:
    """Re-initialise the LM head so a LoRA on a tiny model can make confident predictions.

    The final RMSNorm (frozen under LoRA) fixes |h| at about sqrt(hidden) = 8. With row std s, the
    best logit an adapter can reach is |h| * |w| = 8 * 8s, while the 152k other logits are
    N(0, (8s)^2). At the default s = 0.02 every logit is ~0 and the loss stalls near ln(vocab)
    (measured); at s = 0.25 the reachable margin caps p(answer) near 0.9 and a single batch
    could not be overfitted below loss 1.2; at s = 1.0 it overfits to 0.1 (measured, 150 steps).
    """
    import torch

    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.normal_(0.0, std)
