"""Runs llama.cpp's `convert_hf_to_gguf.py` with medzoo's corrections for what it gets wrong.

Used as `python -m medzoo.export.gguf_convert CONVERTER_DIR <converter arguments>` (a subprocess: the
converter imports torch and its own `gguf`, and must not share medzoo's process).

Corrections, each found by the export's parity check:
- Gemma 3: the converter writes no per-layer attention pattern, so llama.cpp assumes "every 6th
  layer is global" and gives every other layer the sliding-window RoPE base (10k instead of 1M).
  A model whose `layer_types` differ from that (medzoo's tiny Gemma: [sliding, full]) then drifts
  with position (logits off by ~1.5 at token 15, 55% answer agreement, measured). llama.cpp reads
  an explicit per-layer pattern when the GGUF has one (as Gemma 3n's converter writes); medzoo
  writes it from `layer_types`. For real Gemma 3 / MedGemma it equals the default pattern.
- Gemma 3: transformers' processor puts "\n\n" before `<start_of_image>` and after
  `<end_of_image>`; llama.cpp's mtmd wraps the image in the two tokens only. The model then sees
  a prompt it was not trained on (tiny Gemma: 65% agreement). The GGUF's chat template gets the
  padding around llama.cpp's media marker, where llama.cpp front ends put each image.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

MEDIA_MARKER = "<__media__>"  # llama.cpp's mtmd_default_marker(): where front ends place each image
GEMMA3_IMAGE_PADDING = "\n\n"  # what transformers' Gemma3Processor adds on both sides of an image


def gemma3_llama_cpp_template(template: str) -> str:
    """Gemma 3's chat template with HF's image padding around llama.cpp's media markers.

    The template trims text parts, and llama.cpp front ends hand it each image as text holding a
    marker, so the padding must come from the template itself. llama-mtmd-cli and llama-cpp-python
    use `<__media__>`; llama-server a random `<__media_XXXX__>` per process (unless
    LLAMA_MEDIA_MARKER pins it), so the template pads both by their common start and end. (User
    text containing "__>" would be padded too: a price paid for serving every front end.)"""
    pad = GEMMA3_IMAGE_PADDING
    start, end = MEDIA_MARKER[:-3], MEDIA_MARKER[-3:]  # "<__media_", "__>"
    padding = f" | replace({start!r}, {pad + start!r}) | replace({end!r}, {end + pad!r})"
    out = template
    for trimmed in ("item['text'] | trim", "message['content'] | trim"):
        out = out.replace("{{ " + trimmed + " }}", "{{ (" + trimmed + ")" + padding + " }}")
    return out


def _patch_gemma3() -> None:
    from conversion import gemma

    original = gemma.Gemma3Model.set_gguf_parameters

    def set_gguf_parameters(self):
        original(self)
        if type(self) is not gemma.Gemma3Model:  # Gemma 3n / 4 subclasses write their own pattern
            return
        layer_types = self.hparams.get("layer_types")
        if layer_types and self.hparams.get("sliding_window"):
            self.gguf_writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])

    gemma.Gemma3Model.set_gguf_parameters = set_gguf_parameters

    original_vocab = gemma.Gemma3Model.set_vocab

    def set_vocab(self):
        original_vocab(self)
        if type(self) is not gemma.Gemma3Model:
            return
        key = "tokenizer.chat_template"
        current = next((kv[key].value for kv in self.gguf_writer.kv_data if key in kv), None)
        if isinstance(current, str):
            self.gguf_writer.remove_key(key)
            self.gguf_writer.add_chat_template(gemma3_llama_cpp_template(current))

    gemma.Gemma3Model.set_vocab = set_vocab


def main(argv: list[str]) -> None:
    converter = Path(argv[0])
    sys.path[:0] = [str(converter / "gguf-py"), str(converter)]
    _patch_gemma3()
    sys.argv = [str(converter / "convert_hf_to_gguf.py"), *argv[1:]]
    runpy.run_path(str(converter / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
