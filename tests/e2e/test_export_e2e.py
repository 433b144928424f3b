"""End to end (slow): `medzoo export --gguf`: llama.cpp's converter + quantiser, mmproj, Modelfile, and the parity check
against the merged transformers model, for the Qwen2.5-VL and Gemma 3 families."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_medzoo

from medzoo.serve import Server, free_port, stop, wait_until_ready

pytestmark = pytest.mark.slow


# One 40-step stage (phantom-tiny-gemma's curriculum would otherwise set its own steps).
TRAIN = [
    "--set",
    "data.n_train=48",
    "--set",
    "data.n_val=8",
    "--set",
    "data.n_test=20",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.max_steps=40",
    "--set",
    "train.stages=[]",
    "--set",
    "train.eval_steps=1000",
]


# Each family runs the path users take: its base given by Hub id, found in a Hugging Face cache (a
# private one holding the zoo model under the seed recipe's id; HF_HUB_OFFLINE=1 as everywhere).
HUB_BASES = {
    "phantom-tiny": ("Qwen/Qwen2.5-VL-7B-Instruct", "tiny-qwen2.5-vl"),
    "phantom-tiny-gemma": ("google/medgemma-4b-it", "tiny-gemma3"),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["phantom-tiny", "phantom-tiny-gemma"])
def test_export_gguf_quantises_and_matches_merged_model(recipe, tmp_path):
    """train -> bench -> merge -> export (f16 parity) -> card with `base: <Hub id>`, per family."""
    from hub_cache import hub_env, place

    from medzoo.zoo import build

    hub_id, zoo_name = HUB_BASES[recipe]
    snapshot = place(tmp_path / "hf", hub_id, build(zoo_name))
    env = hub_env(tmp_path / "hf")
    run = tmp_path / "run"
    sets = ["--set", f"run_dir={run}", "--set", f"base={hub_id}", *TRAIN]
    run_medzoo("train", recipe, *sets, env=env)
    bench = run_medzoo("bench", recipe, "--engine", "hf", "--prompts", "none", "--limit", "6", *sets, env=env)
    assert "tuned/none" in bench.stdout
    proc = run_medzoo("export", recipe, "--gguf", "--quant", "f16,q8_0,q4_k_m", "--parity", "20", *sets, env=env)
    merged = run / "merged"
    assert json.loads((merged / "merge.json").read_text())["base"] == hub_id
    for name in ("tokenizer.model",) if "gemma" in recipe else ():  # llama.cpp reads Gemma's vocabulary from it
        assert (merged / name).read_bytes() == (snapshot / name).read_bytes()
    out = run / "export"
    for q in ("f16", "q8_0", "q4_k_m"):
        assert (out / f"{recipe}-{q}.gguf").stat().st_size > 0
    mmproj = out / f"mmproj-{recipe}-f16.gguf"
    assert mmproj.stat().st_size > 0, "the vision projector is exported"
    assert (out / f"{recipe}-q4_k_m.gguf").stat().st_size < (out / f"{recipe}-f16.gguf").stat().st_size
    parity = json.loads((out / "parity.json").read_text())
    table = {q["quant"]: q for q in parity["quantizations"]}
    # A model trained 40 steps has near-tied answers that f16 rounding flips; the gate (and this
    # test) count only disagreements where the merged model was sure.
    assert table["f16"]["agreement_beyond_near_ties"] >= 0.98, parity
    assert table["f16"]["agreement"] >= 0.8, parity
    assert parity["chat_template_matches_training"] is True
    assert parity["tokenization_matches_training"] is True
    assert parity["examples"] == 20
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{recipe}-q8_0.gguf" in modelfile and f"FROM ./{mmproj.name}" in modelfile
    assert "| f16 |" in proc.stdout and "renders the training prompt: True" in proc.stdout
    assert "-nr" in (out / "README.md").read_text()
    server = parity["server"]  # the f16 GGUF through the real llama-server, as deployed
    assert server["agreement_beyond_near_ties"] >= 0.98 and server["agreement"] >= 0.8, server
    _printed_llama_cpp_commands_answer_as_parity_did(out, parity)
    run_medzoo("card", recipe, *sets, env=env)
    card = (run / "README.md").read_text()
    assert f"base_model: {hub_id}" in card and "| f16 |" in card


def _printed_llama_cpp_commands_answer_as_parity_did(out: Path, parity: dict) -> None:
    """The export README's llama-mtmd-cli line, and its llama-server line with its curl request, run
    as printed (a free port instead of 8080) give the answer the parity check got in-process from
    the same GGUF on the same example: the printed flags reproduce the training prompt."""
    block = (out / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    cli, server, curl = (next(x for x in lines if x.startswith(p)) for p in ("llama-mtmd-cli", "llama-server", "curl"))
    expected = parity["example"]["gguf_answers"]["q8_0"]  # the README runs the q8_0 GGUF
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    port = free_port()
    argv = ["bash", "-c", "exec " + server.removesuffix(" &").replace("--port 8080", f"--port {port}")]
    srv = subprocess.Popen(argv, cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(Server(argv, {}, f"http://127.0.0.1:{port}/v1"), srv, timeout=120)
        reply = subprocess.run(
            ["bash", "-c", curl.replace(":8080/", f":{port}/")], cwd=out, env=env, capture_output=True, text=True
        )
        assert json.loads(reply.stdout)["choices"][0]["message"]["content"].strip() == expected, reply.stdout
    finally:
        stop(srv)

    proc = subprocess.run(["bash", "-c", cli], cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == expected, (proc.stdout, proc.stderr[-2000:])


@pytest.mark.slow
def test_qlora_adapter_merges_into_full_precision_base(tmp_path):
    run = tmp_path / "run"
    sets = ["--set", f"run_dir={run}", *TRAIN[:-4], "--set", "train.max_steps=4", "--set", "train.eval_steps=1000"]
    run_medzoo("train", "phantom-tiny-qlora", *sets)
    proc = run_medzoo("merge", "phantom-tiny-qlora", *sets)
    info = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert info["dtype"] == "float32" and info["max_logit_diff"] < 1e-3
    from safetensors import safe_open

    with safe_open(str(run / "merged" / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert dtypes == {"F32"}, "no 4-bit weights in the merged model"
