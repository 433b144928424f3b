"""The Ollama Modelfile an export writes (the commands that run it: medzoo.export.commands)."""

from __future__ import annotations

OLLAMA_TEMPLATES = {
    "qwen_vl": (
        "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "gemma3": "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n",
}


# Read against Ollama's source (v0.30.0 onwards): GGUF models run in llama-server, the mmproj FROM
# line becomes `--mmproj`, and a Modelfile TEMPLATE is rendered by Ollama in Go (the image as a
# bare marker before the text) unless the server runs with OLLAMA_GO_TEMPLATE=0, when llama-server
# renders the GGUF's own chat template, the one medzoo's export checks through llama-server.
OLLAMA_MIN_VERSION = "0.30.0"
OLLAMA_QWEN_MIN_IMAGE_TOKENS = 1024  # Ollama always passes --image-min-tokens 1024 for Qwen-VL models
_IMAGE_TAG = "[img-0]"  # Ollama's image tag in a prompt, replaced by llama-server's media marker


def modelfile(family, model_file: str, mmproj_file: str, system: str | None, warnings: list[str] = ()) -> str:
    key = "gemma3" if family.name == "gemma3" else "qwen_vl"
    lines = [
        "# Ollama Modelfile written by medzoo export. Keep the mmproj FROM line: without it Ollama loses vision.",
        "# Serve with `OLLAMA_GO_TEMPLATE=0 ollama serve`: Ollama then hands prompts to llama-server with the",
        "# GGUF's chat template (the prompt training used, checked by the export through llama-server);",
        "# otherwise it renders the TEMPLATE below itself.",
        *(f"# warning: {w}" for w in warnings),
        f"REQUIRES {OLLAMA_MIN_VERSION}",
        f"FROM ./{model_file}",
        f"FROM ./{mmproj_file}",
        f'TEMPLATE """{OLLAMA_TEMPLATES[key]}"""',
        f'PARAMETER stop "{family.end_of_turn}"',
        "PARAMETER temperature 0",
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def render_ollama_template(template: str, system: str | None, prompt: str) -> str:
    """Ollama's rendering of medzoo's (legacy, single-turn) TEMPLATE: Go template semantics for the
    constructs it uses: `{{ if .System }}...{{ end }}`, `{{ .System }}`, `{{ .Prompt }}`, and `{{-`
    trimming the whitespace before it."""
    import re

    text = re.sub(r"\s*\{\{-", "{{", template)
    text = re.sub(r"\{\{ if \.System \}\}(.*?)\{\{ end \}\}", lambda m: m.group(1) if system else "", text, flags=re.S)
    return text.replace("{{ .System }}", system or "").replace("{{ .Prompt }}", prompt)


def ollama_differences(family, prompt: str, system: str | None, user_text: str, budget) -> list[str]:
    """What Ollama does differently from training for this export, each as one sentence.

    `prompt`: training's rendered prompt for one example (image placeholder unexpanded), `system`
    and `user_text` that example's parts. The Modelfile TEMPLATE is rendered with Ollama's
    semantics (the image as a tag before the text) and compared with what llama.cpp must see to
    reproduce training: the image span replaced by one marker, with the padding the HF processor
    adds around it (Gemma 3: a blank line on each side)."""
    from medzoo.export.gguf_convert import GEMMA3_IMAGE_PADDING

    out = []
    key = "gemma3" if family.name == "gemma3" else "qwen_vl"
    if key == "gemma3":
        expected = prompt.removeprefix("<bos>").replace(
            "<start_of_image>", GEMMA3_IMAGE_PADDING + _IMAGE_TAG + GEMMA3_IMAGE_PADDING
        )
    else:
        expected = prompt.replace("<|vision_start|><|image_pad|><|vision_end|>", _IMAGE_TAG)
    rendered = render_ollama_template(OLLAMA_TEMPLATES[key], system, _IMAGE_TAG + user_text)
    if rendered != expected:
        at = next((i for i, (a, b) in enumerate(zip(rendered, expected)) if a != b), min(len(rendered), len(expected)))
        out.append(
            f"Ollama's own rendering of the TEMPLATE differs from the training prompt at character {at} "
            f"({rendered[at : at + 12]!r} vs {expected[at : at + 12]!r}); serve with OLLAMA_GO_TEMPLATE=0"
        )
    if key == "qwen_vl" and budget and budget[1] < OLLAMA_QWEN_MIN_IMAGE_TOKENS:
        out.append(
            f"Ollama passes --image-min-tokens {OLLAMA_QWEN_MIN_IMAGE_TOKENS} to llama-server for Qwen-VL, and this "
            f"model was trained at {budget[0]}-{budget[1]} image tokens: Ollama resizes images differently from "
            "training (pixel sizes in measurement prompts no longer hold); llama-server with the printed flags does not"
        )
    return out


def default_system(processor) -> str | None:
    """The system prompt the chat template adds when none is given (Qwen: 'You are a helpful assistant.')."""
    probe = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "x"}]}], tokenize=False, add_generation_prompt=True
    )
    marker = "<|im_start|>system\n"
    if marker in probe:
        return probe.split(marker, 1)[1].split("<|im_end|>", 1)[0]
    return None
