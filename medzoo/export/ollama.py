"""What users run after an export: the Ollama Modelfile and the llama.cpp / Ollama commands
(the export README and the model card print the same ones)."""

from __future__ import annotations

from pathlib import Path

OLLAMA_TEMPLATES = {
    "qwen_vl": (
        "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "gemma3": "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n",
}


def modelfile(family, model_file: str, mmproj_file: str, system: str | None) -> str:
    key = "gemma3" if family.name == "gemma3" else "qwen_vl"
    lines = [
        "# Ollama Modelfile written by medzoo export. Keep the mmproj FROM line: without it Ollama loses vision.",
        f"FROM ./{model_file}",
        f"FROM ./{mmproj_file}",
        f'TEMPLATE """{OLLAMA_TEMPLATES[key]}"""',
        f'PARAMETER stop "{family.end_of_turn}"',
        "PARAMETER temperature 0",
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def default_system(processor) -> str | None:
    """The system prompt the chat template adds when none is given (Qwen: 'You are a helpful assistant.')."""
    probe = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "x"}]}], tokenize=False, add_generation_prompt=True
    )
    marker = "<|im_start|>system\n"
    if marker in probe:
        return probe.split(marker, 1)[1].split("<|im_end|>", 1)[0]
    return None


def run_commands(name: str, model: str, mmproj: str, budget: tuple[int, int] | list[int] | None) -> str:
    """The bash block that runs an export with llama.cpp and Ollama (export README, model card)."""
    flags = f" --image-min-tokens {budget[0]} --image-max-tokens {budget[1]}" if budget else ""
    return f"""```bash
# llama.cpp (-nr: no weight repacking; needed on AMX CPUs for quantised models)
# --image-*-tokens: resize images as training did (llama.cpp's Qwen-VL default budget differs)
llama-mtmd-cli -m {model} --mmproj {mmproj} --image scan.png -p "Is there a polyp in the image?" --temp 0 -nr{flags}
llama-server -m {model} --mmproj {mmproj} --temp 0 -nr{flags}
# Ollama (keep both FROM lines of the Modelfile)
ollama create {name} -f Modelfile
ollama run {name} "Is there a polyp in the image? ./scan.png"
```"""


def run_snippet(name: str, files: dict, mmproj: Path, default_quant: str, budget: tuple[int, int] | None) -> str:
    return f"""# {name}: GGUF export

Files: {", ".join(p.name for p in files.values())}, {mmproj.name} (vision projector), Modelfile, parity.json.

{run_commands(name, files[default_quant].name, mmproj.name, budget)}
"""
