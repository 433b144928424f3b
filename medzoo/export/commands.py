"""The commands users run on an export: one builder per command, used for what medzoo prints (the
export README, the model card), what `medzoo serve --engine llama.cpp` starts, what the export's
parity check runs (llama-server) and what the tests run (the printed lines themselves).

They reproduce the training prompt, which llama.cpp's defaults do not all do:
- `--jinja`: the GGUF's chat template (the one parity checks renders training's prompt);
- the image first: training puts it before the text; llama-mtmd-cli puts an image whose marker
  `<__media__>` is missing from `-p` after the text, so the marker leads the prompt;
- `-sys`: the system prompt training used (none given: the template's default);
- `--image-min-tokens/--image-max-tokens`: training's image-token budget (llama.cpp's Qwen-VL
  projector has its own; images would be resized differently);
- `-nr`: no weight repacking (it crashes on quantised models on AMX CPUs); `--temp 0`: greedy.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from medzoo.errors import MissingState

MEDIA_MARKER = "<__media__>"  # llama.cpp's default image marker (mtmd_default_marker)


def llama_binary(name: str) -> str:
    """A llama.cpp binary: the one tools/build_llama_cpp.sh linked next to this Python, else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise MissingState(f"{name} not found next to {sys.executable} or on PATH: run `make venv` (it builds it)")
    return found


def _common(model: str, mmproj: str, budget) -> list[str]:
    flags = ["-m", model, "--mmproj", mmproj, "--jinja", "--temp", "0", "-nr"]
    if budget:
        flags += ["--image-min-tokens", str(budget[0]), "--image-max-tokens", str(budget[1])]
    return flags


def llama_server_argv(model: str, mmproj: str, budget, exe: str = "llama-server", **extra) -> list[str]:
    """`llama-server` for an export; `extra`: more flags (host="127.0.0.1" -> --host 127.0.0.1)."""
    flags = [f for key, value in extra.items() for f in ("--" + key.replace("_", "-"), str(value))]
    return [exe, *_common(model, mmproj, budget), *flags]


def llama_mtmd_cli_argv(
    model: str, mmproj: str, budget, image: str, example: dict, max_tokens: int, exe: str = "llama-mtmd-cli"
) -> list[str]:
    """`llama-mtmd-cli` asking one example (its system prompt, if any, and user text) about `image`."""
    system = ["-sys", example["system"]] if example.get("system") else []
    prompt = MEDIA_MARKER + example["user_text"]
    return [exe, *_common(model, mmproj, budget), "--image", image, *system, "-p", prompt, "-n", str(max_tokens)]


def example_messages(example: dict) -> list[dict]:
    """An example as training's chat messages (image placeholder first in the user turn)."""
    system = [{"role": "system", "content": [{"type": "text", "text": example["system"]}]}] if example["system"] else []
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example["user_text"]}]}
    return [*system, user]


def curl_request(base_url: str, messages: list[dict], max_tokens: int, model: str, image: str = "scan.png") -> str:
    """A curl command sending one chat request in training's format, with `image` as a data URI."""
    parts = []
    for m in messages:
        content = [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,IMAGE"}} if c["type"] == "image" else c
            for c in m["content"]
        ]
        parts.append({"role": m["role"], "content": content})
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": max_tokens, "messages": parts})
    # close the single quotes around the body so the shell substitutes the image's base64
    body = body.replace("'", "'\\''").replace("IMAGE", f"'\"$(base64 -w0 {shlex.quote(image)})\"'")
    return f"curl -s {base_url}/chat/completions -H 'Content-Type: application/json' -d '{body}'"


def run_commands(
    name: str,
    model: str,
    mmproj: str,
    budget,
    example: dict | None = None,
    max_tokens: int = 64,
    port: int = 8080,
) -> str:
    """The bash block that runs an export with llama.cpp and Ollama (export README, model card)."""
    example = example or {"system": None, "user_text": "Is there a polyp in the image?"}
    expected = ""
    if example.get("answer"):
        in_process = example.get("gguf_answers", {}).get(model.rsplit("-", 1)[-1].removesuffix(".gguf"))
        also = f" ({model} in llama-cpp-python: {in_process!r})" if in_process is not None else ""
        expected = f"\n# the merged model answers this example: {example['answer']!r}{also}"
    cli = shlex.join(llama_mtmd_cli_argv(model, mmproj, budget, "scan.png", example, max_tokens))
    server = shlex.join(llama_server_argv(model, mmproj, budget, port=port))
    request = curl_request(f"http://127.0.0.1:{port}/v1", example_messages(example), max_tokens, name)
    return f"""```bash
# llama.cpp (-nr: no weight repacking; needed on AMX CPUs for quantised models)
# --image-*-tokens: resize images as training did (llama.cpp's Qwen-VL default budget differs){expected}
{cli}
{server} &
{request}
# Ollama >= 0.30 (keep both FROM lines of the Modelfile; OLLAMA_GO_TEMPLATE=0: the GGUF's chat template)
OLLAMA_GO_TEMPLATE=0 ollama serve &
ollama create {name} -f Modelfile
ollama run {name} {shlex.quote(example["user_text"] + " ./scan.png")}
```"""


def run_snippet(
    name: str, files: dict, mmproj: Path, default_quant: str, budget, example: dict | None, max_tokens: int
) -> str:
    return f"""# {name}: GGUF export

Files: {", ".join(p.name for p in files.values())}, {mmproj.name} (vision projector), Modelfile, parity.json.
scan.png: the first example parity.json checked (the pixels the check sent), asked below as training asked it.

{run_commands(name, files[default_quant].name, mmproj.name, budget, example, max_tokens)}
"""
