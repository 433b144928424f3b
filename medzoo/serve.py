"""`medzoo serve`: the servers users deploy, started with the flags that reproduce training.

What the user deploys is `vllm serve` or `llama-server`, so that is what runs (a child process,
exactly as shipped). llama-server runs the GGUF export with the flags its README prints
(medzoo.export.commands). vLLM gets the settings `medzoo bench` uses in-process, derived from the
same medzoo.engines.vllm_engine.engine_kwargs:

- the base model and the recipe's adapter as a LoRA module named "tuned" (`--lora-modules`),
  `--max-lora-rank` from the adapter (vLLM's default 16 refuses r=32) and one LoRA slot more than
  adapters (vLLM's CPU ops read the last slot for requests without an adapter), and
  `--enable-tower-connector-lora` when the adapter has vision tower/projector weights
  (medzoo.engines.vllm_engine.lora_settings, as bench);
- `--mm-processor-kwargs` with the recipe's image budget, so images are resized as in training;
- the model's chat template file, and `--generation-config vllm` so no sampling default from the
  model's generation_config.json (e.g. a repetition penalty) changes greedy answers.

`medzoo bench --engine openai --base-url URL` evaluates it (or any OpenAI-compatible server) with
the same prompts and metrics; tests/e2e/test_bench_e2e.py checks its answers equal `medzoo bench`'s.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from medzoo.errors import InvalidValue, MissingState

BASE_NAME = "base"  # served name of the base model; adapters are served under their bench label


@dataclass
class Server:
    argv: list[str]
    env: dict[str, str]  # set on top of the caller's environment (CPU settings)
    base_url: str  # …/v1
    models: dict[str, str] = field(default_factory=dict)  # bench label -> served name

    def command_line(self) -> str:
        """The command a user runs to get this very server."""
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.env.items()), shlex.join(self.argv)])


def _flags(kwargs: dict) -> list[str]:
    """vLLM engine keyword arguments as `vllm serve` flags (same names, dashes; dicts as JSON)."""
    out: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return out


def vllm_server(recipe, host: str = "127.0.0.1", port: int = 8000, adapter: str | None = None, base=None) -> Server:
    """The `vllm serve` command for a recipe's base model and its adapter (if trained or given).

    `base`: the recipe's medzoo.models.loading.RecipeBase, if the caller has it loaded already."""
    from medzoo.bench.plan import engine_settings, served_shape
    from medzoo.engines.vllm_cli import vllm_command
    from medzoo.engines.vllm_engine import cpu_environment, engine_kwargs, has_cuda, lora_settings
    from medzoo.merge import adapter_vllm_blocker
    from medzoo.models.loading import model_context, recipe_base
    from medzoo.run import RunDir, open_run

    if not adapter:
        open_run(recipe, "serve")  # refuses a recipe that changed the adapter's inputs since training
    base = base or recipe_base(recipe)
    adapter_path = Path(adapter) if adapter else RunDir(recipe.run_path()).adapter
    adapters = {"tuned": adapter_path} if (adapter_path / "adapter_config.json").exists() else {}
    if adapter and not adapters:
        raise MissingState(f"--adapter {adapter}: not a peft adapter folder (no adapter_config.json)")
    for path in adapters.values():
        if reason := adapter_vllm_blocker(path, base.family, base.path):
            raise InvalidValue(
                f"{path}: vLLM cannot serve this adapter as LoRA: {reason}; "
                f"serve a merged copy instead (`medzoo merge {recipe.name}`, then `vllm serve` its folder)"
            )
    images, needed = served_shape(recipe, base)
    settings = lora_settings(adapters, base.family, **engine_settings(recipe, needed, model_context(base.path)))
    on_cuda = has_cuda()
    kwargs = engine_kwargs(base.path, settings, images, base.image_settings, on_cuda=on_cuda)
    model = kwargs.pop("model")
    argv = [*vllm_command(), "serve", model, "--served-model-name", BASE_NAME, *_flags(kwargs)]
    if adapters:
        argv += ["--lora-modules", *(f"{label}={path}" for label, path in adapters.items())]
    template = Path(model) / "chat_template.jinja"
    if template.exists():
        argv += ["--chat-template", str(template)]
    argv += ["--generation-config", "vllm", "--host", host, "--port", str(port)]
    env = {} if on_cuda else cpu_environment(settings, multiprocessing=True)
    models = {BASE_NAME: BASE_NAME, **{label: label for label in adapters}}
    return Server(argv, env, f"http://{host}:{port}/v1", models)


def llama_cpp_server(recipe, host: str = "127.0.0.1", port: int = 8080, quant: str | None = None) -> Server:
    """`llama-server` on the recipe's GGUF export (`medzoo export --gguf`), with the flags the
    export README prints (medzoo.export.commands), serving the merged model as "tuned"."""
    export = recipe.run_path() / "export"
    parity_file = export / "parity.json"
    if not parity_file.exists():
        raise MissingState(f"{export}: no GGUF export; run `medzoo export {recipe.name} --gguf` first")
    parity = json.loads(parity_file.read_text())
    files = {q["quant"]: q["file"] for q in parity["quantizations"]}
    quant = quant or ("q8_0" if "q8_0" in files else "f16")
    if quant not in files:
        raise InvalidValue(f"--quant {quant}: the export in {export} has {', '.join(files)}")
    return llama_server(export / files[quant], export / parity["mmproj"], parity.get("image_tokens"), host, port)


def llama_server(model: Path, mmproj: Path, budget, host: str, port: int) -> Server:
    """`llama-server` for a GGUF + mmproj as the export README prints it, the model served as "tuned"."""
    from medzoo.export.commands import llama_binary, llama_server_argv

    exe = llama_binary("llama-server")
    argv = llama_server_argv(str(model), str(mmproj), budget, exe=exe, alias="tuned", host=host, port=port)
    return Server(argv, {}, f"http://{host}:{port}/v1", {"tuned": "tuned"})


def wait_until_ready(server: Server, proc: subprocess.Popen, timeout: float = 600, log: Path | None = None) -> None:
    """Poll …/v1/models until the server answers; a server that exits first is an error."""
    where = f"its log: {log}" if log else "its log is above"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MissingState(
                f"{Path(server.argv[0]).name} exited with code {proc.returncode} before answering; {where}"
            )
        try:
            with urllib.request.urlopen(server.base_url + "/models", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:  # not listening yet, or 503 while the model loads
            pass
        time.sleep(0.5)
    raise MissingState(
        f"{Path(server.argv[0]).name} did not answer at {server.base_url} within {timeout:.0f} s; {where}"
    )


@contextmanager
def running(server: Server, log: Path | None = None, timeout: float = 600):
    """The server started and answering inside the `with` block, stopped after it (errors too);
    its output goes to `log` if given."""
    out = open(log, "w") if log else None  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(
        server.argv, env={**os.environ, **server.env}, stdout=out, stderr=subprocess.STDOUT if out else None
    )
    try:
        wait_until_ready(server, proc, timeout, log)
        yield proc
    finally:
        stop(proc)
        if out:
            out.close()


def run(server: Server, on_ready=None) -> int:
    """Start the server, call `on_ready()` once it answers, and serve until it exits, or until Ctrl-C
    or SIGTERM (`kill`, a container stop) stops it: both stop the server too, none is orphaned."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with running(server) as proc:  # stopped on the way out, Ctrl-C included
            if on_ready:
                on_ready()
            return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop(proc: subprocess.Popen, grace: float = 30) -> int:
    """SIGINT (vLLM and llama-server shut down cleanly on it), then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0


def free_port() -> int:
    """A TCP port nothing listens on now (for servers medzoo starts for itself)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
