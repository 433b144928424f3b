"""`medzoo serve`'s command and the OpenAI-compatible engine's requests (the real server: tests/e2e)."""

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from medzoo.engines.base import Request
from medzoo.engines.openai_engine import OpenAIEngine, openai_messages
from medzoo.errors import InvalidValue, MissingState


def _adapter(folder, r=32, vision=False):
    """A peft adapter folder: LoRA on a language-model layer, and on the vision tower if asked."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r}))
    keys = ["base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"]
    if vision:
        keys.append("base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight")
    save_file({k: torch.zeros(r, 64) for k in keys}, str(folder / "adapter_model.safetensors"))
    return folder


def test_vllm_server_command_reproduces_the_bench_settings(tmp_path):
    from medzoo import serve
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import load_recipe

    recipe = load_recipe("phantom-tiny", [f"run_dir={tmp_path / 'run'}"])
    server = serve.vllm_server(recipe, port=8123, adapter=str(_adapter(tmp_path / "ad", r=32)))
    argv = server.argv
    assert argv[argv.index("serve") + 1] == str(recipe_base(recipe).path)
    assert argv[argv.index("--served-model-name") + 1] == "base"
    assert argv[argv.index("--max-lora-rank") + 1] == "32", "vLLM's default rank 16 refuses r=32 adapters"
    assert argv[argv.index("--max-loras") + 1] == "2", "one LoRA slot more than adapters"
    assert argv[argv.index("--lora-modules") + 1] == f"tuned={tmp_path / 'ad'}"
    image = recipe_base(recipe).image_settings  # the image budget training used
    kwargs = json.loads(argv[argv.index("--mm-processor-kwargs") + 1])
    assert kwargs == {"size": {"longest_edge": image["max_pixels"], "shortest_edge": image["min_pixels"]}}
    assert argv[argv.index("--generation-config") + 1] == "vllm" and "--enable-lora" in argv
    assert argv[argv.index("--chat-template") + 1].endswith("chat_template.jinja")
    assert server.base_url == "http://127.0.0.1:8123/v1" and server.models == {"base": "base", "tuned": "tuned"}
    assert server.command_line().startswith("VLLM_CPU_KVCACHE_SPACE=2 ")
    assert "--enable-tower-connector-lora" not in argv, "only adapters with vision-tower LoRA need it"
    tower = serve.vllm_server(recipe, adapter=str(_adapter(tmp_path / "tower", r=8, vision=True)))
    assert "--enable-tower-connector-lora" in tower.argv, "else vLLM drops the tower weights"
    no_adapter = serve.vllm_server(recipe, port=8124)  # nothing trained in run_dir: the base alone
    assert "--enable-lora" not in no_adapter.argv and no_adapter.models == {"base": "base"}
    with pytest.raises(MissingState, match="not a peft adapter folder"):
        serve.vllm_server(recipe, adapter=str(tmp_path))


class _FakeServer(BaseHTTPRequestHandler):
    """A stand-in for the network edge: records requests, answers with what it was asked."""

    received: list = []
    owned_by = "vllm"

    def do_GET(self):
        models = [
            {"id": "base", "owned_by": self.owned_by},
            {"id": "tuned", "parent": "base", "owned_by": self.owned_by},
        ]
        self._send({"data": models})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        text = body["messages"][-1]["content"][-1]["text"]
        self._send({"choices": [{"message": {"content": f"{body['model']}:{text}"}}]})

    def _send(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _Backlogged(ThreadingHTTPServer):
    request_queue_size = 64  # the engine connects 16 at once (the default backlog, 5, resets some)


@pytest.fixture
def fake_server():
    _FakeServer.received = []
    httpd = _Backlogged(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _messages(text):
    return [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]


def test_openai_engine_sends_training_messages_with_lossless_images_in_order(fake_server):
    image = Image.new("RGB", (7, 5), (10, 200, 33))
    image.putpixel((3, 2), (255, 0, 1))
    engine = OpenAIEngine.connect(fake_server, ["base", "tuned"], stop_token_ids=[5, 6])
    requests = [Request("", [image], _messages(f"q{i}"), adapter="tuned" if i % 2 else None) for i in range(20)]
    answers = engine.generate(requests, 8)
    assert answers == [f"{'tuned' if i % 2 else 'base'}:q{i}" for i in range(20)]
    body = next(b for b in _FakeServer.received if b["messages"][-1]["content"][-1]["text"] == "q3")
    assert body["temperature"] == 0 and body["max_tokens"] == 8 and body["stop_token_ids"] == [5, 6]
    user = body["messages"][1]["content"]
    assert user[0]["type"] == "image_url" and user[1] == {"type": "text", "text": "q3"}, "image first, as trained"
    png = base64.b64decode(user[0]["image_url"]["url"].split(",", 1)[1])
    assert list(Image.open(io.BytesIO(png)).getdata()) == list(image.getdata())


def test_openai_engine_sends_vllm_fields_only_to_vllm(fake_server, monkeypatch):
    monkeypatch.setattr(_FakeServer, "owned_by", "llamacpp")
    engine = OpenAIEngine.connect(fake_server, ["base"], stop_token_ids=[5])
    engine.generate([Request("", [Image.new("RGB", (2, 2))], _messages("q"))], 4)
    assert "stop_token_ids" not in _FakeServer.received[-1]


def test_openai_engine_errors_are_one_line(fake_server):
    with pytest.raises(MissingState, match="serves no model named 'other'.*--lora-modules other=ADAPTER"):
        OpenAIEngine.connect(fake_server, ["base", "other"])
    with pytest.raises(InvalidValue, match="--model 'nope': the endpoint .* serves base, tuned"):
        OpenAIEngine.connect(fake_server, ["base"], model="nope")
    with pytest.raises(MissingState, match="no OpenAI-compatible server answers"):
        OpenAIEngine.connect("http://127.0.0.1:9/v1", ["base"])


def test_image_placeholders_become_image_url_parts_in_order():
    a, b = Image.new("RGB", (1, 1), (1, 1, 1)), Image.new("RGB", (1, 1), (2, 2, 2))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "t"}]}]
    parts = openai_messages(messages, [a, b])[0]["content"]
    decoded = [
        Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",")[1]))).getpixel((0, 0))
        for p in parts[:2]
    ]
    assert decoded == [(1, 1, 1), (2, 2, 2)] and parts[2] == {"type": "text", "text": "t"}


def test_openai_engine_refuses_to_bench_a_merged_model_as_the_base(fake_server, monkeypatch):
    monkeypatch.setattr(
        _FakeServer, "do_GET", lambda self: self._send({"data": [{"id": "tuned", "owned_by": "llamacpp"}]})
    )
    with pytest.raises(InvalidValue, match="serves only tuned, no base model: bench it with --models tuned"):
        OpenAIEngine.connect(fake_server, ["base", "tuned"])
    assert OpenAIEngine.connect(fake_server, ["tuned"]).models == {"tuned": "tuned"}


EXAMPLE = {"system": "You're a radiologist.", "user_text": "What's the distance (mm)?", "answer": "12.5"}


def test_printed_llama_mtmd_cli_reproduces_the_training_prompt():
    from medzoo.export.commands import MEDIA_MARKER, llama_mtmd_cli_argv

    argv = llama_mtmd_cli_argv("m.gguf", "mm.gguf", (16, 64), "scan.png", EXAMPLE, 32)
    assert "--jinja" in argv, "the GGUF's (parity-checked) chat template, not llama.cpp's fallback"
    assert argv[argv.index("-p") + 1] == MEDIA_MARKER + EXAMPLE["user_text"], "the image before the question"
    assert argv[argv.index("-sys") + 1] == EXAMPLE["system"]
    assert argv[argv.index("--image-min-tokens") + 1] == "16" and argv[argv.index("--image-max-tokens") + 1] == "64"
    assert "-sys" not in llama_mtmd_cli_argv("m", "mm", None, "x.png", {**EXAMPLE, "system": None}, 8)


def test_printed_curl_request_is_valid_shell_with_the_image_inlined(tmp_path):
    """The README's curl line, run by bash with curl replaced by a printer, sends training's messages
    (quotes in the text survive) and the image file's exact bytes."""
    import subprocess

    from medzoo.export.commands import curl_request, example_messages

    Image.new("RGB", (4, 3), (9, 8, 7)).save(tmp_path / "scan.png")
    line = curl_request("http://127.0.0.1:8080/v1", example_messages(EXAMPLE), 32, "tuned")
    out = subprocess.run(
        ["bash", "-c", 'curl() { printf "%s" "${@: -1}"; }; ' + line], cwd=tmp_path, capture_output=True, text=True
    )
    body = json.loads(out.stdout)
    assert body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": EXAMPLE["system"]}]}
    image, text = body["messages"][1]["content"]
    assert text == {"type": "text", "text": EXAMPLE["user_text"]} and body["model"] == "tuned"
    assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == (tmp_path / "scan.png").read_bytes()


def test_llama_cpp_server_runs_the_export_as_its_readme_says(tmp_path, monkeypatch):
    from medzoo import serve
    from medzoo.recipe import load_recipe

    recipe = load_recipe("phantom-tiny", [f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(MissingState, match="no GGUF export; run `medzoo export phantom-tiny --gguf` first"):
        serve.llama_cpp_server(recipe)
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    quants = [{"quant": q, "file": f"phantom-tiny-{q}.gguf"} for q in ("f16", "q8_0")]
    parity = {"quantizations": quants, "mmproj": "mmproj-phantom-tiny-f16.gguf", "image_tokens": [16, 16]}
    (export / "parity.json").write_text(json.dumps(parity))
    monkeypatch.setattr("medzoo.export.commands.llama_binary", lambda name: f"/opt/{name}")
    server = serve.llama_cpp_server(recipe, port=8099)
    argv = server.argv
    assert argv[0] == "/opt/llama-server" and argv[argv.index("-m") + 1] == str(export / "phantom-tiny-q8_0.gguf")
    assert argv[argv.index("--mmproj") + 1] == str(export / "mmproj-phantom-tiny-f16.gguf") and "--jinja" in argv
    assert argv[argv.index("--alias") + 1] == "tuned" and server.base_url == "http://127.0.0.1:8099/v1"
    with pytest.raises(InvalidValue, match="--quant q4_k_m: the export in .* has f16, q8_0"):
        serve.llama_cpp_server(recipe, quant="q4_k_m")


def test_sigterm_to_medzoo_serve_stops_the_server_it_started(tmp_path):
    """`kill` or a container stop sends SIGTERM: the server child is stopped with medzoo, not orphaned
    on its port (found: vLLM kept serving after its `medzoo serve` parent was terminated)."""
    import signal
    import subprocess
    import sys
    import urllib.request

    from medzoo.serve import free_port

    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text('{"data": []}')
    port = free_port()
    script = (
        "import sys\nfrom medzoo.serve import Server, run\n"
        f"argv = [sys.executable, '-m', 'http.server', '{port}', '--bind', '127.0.0.1', '--directory', {str(tmp_path)!r}]\n"
        f"sys.exit(run(Server(argv, {{}}, 'http://127.0.0.1:{port}/v1'), on_ready=lambda: print('READY', flush=True)))\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert any(line.strip() == "READY" for line in iter(parent.stdout.readline, "")), "the server came up"
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5).close()
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(30) == 0
        with pytest.raises(OSError):  # nothing listens any more
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
    finally:
        parent.kill()
