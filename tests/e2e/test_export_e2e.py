"""End to end (slow): `medzoo export --gguf`: llama.cpp's converter + quantiser, mmproj, Modelfile, and the parity check
against the merged transformers model, for the Qwen2.5-VL and Gemma 3 families."""

import json

import pytest
from conftest import run_medzoo

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


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["phantom-tiny", "phantom-tiny-gemma"])
def test_export_gguf_quantises_and_matches_merged_model(recipe, tmp_path):
    run = tmp_path / "run"
    sets = ["--set", f"run_dir={run}", *TRAIN]
    run_medzoo("train", recipe, *sets)
    proc = run_medzoo("export", recipe, "--gguf", "--quant", "f16,q8_0,q4_k_m", "--parity", "20", *sets)
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
