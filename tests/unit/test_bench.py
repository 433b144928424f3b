"""`medzoo bench` and `medzoo merge`: scoring, result folders, resume, and engine agreement."""

import json
from pathlib import Path

import pytest
from conftest import run_medzoo


def test_score_example_per_task():
    from medzoo.bench import score_example

    parsed, m = score_example("vqa", "Red.", "red")
    assert parsed is None and m["exact_match"] == 1.0 and m["token_f1"] == 1.0
    parsed, m = score_example("distance", "about 12.0 mm", "10.0")
    assert parsed == [12.0] and m["parsed"] and m["abs_error"] == [2.0] and m["rel_error"] == [pytest.approx(0.2)]
    parsed, m = score_example(
        "lesion-size", "major axis: 20 mm, minor axis: 5 mm", "major axis: 25.0 mm, minor axis: 10.0 mm"
    )
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
    meas = metric_modules.load("medzoo_measurement").compute(
        predictions=["12.0 mm", "nothing"], references=["10.0", "5"]
    )
    # the failed parse counts: abs error |5|, relative error 1
    assert meas["parse_rate"] == 0.5 and meas["mae"] == pytest.approx(3.5) and meas["mre"] == pytest.approx(0.6)
    assert meas["parsed_only_mae"] == pytest.approx(2.0)
    bert = metric_modules.load("medzoo_bertscore").compute(
        predictions=["red", "", "the lesion is red"], references=["red", "red", "blue"]
    )
    assert bert["f1"][0] == pytest.approx(1.0, abs=1e-4) and bert["f1"][1] == 0.0 and 0 < bert["f1"][2] < 1


def _record(config, task, pred, ref, category=None):
    from medzoo.bench import score_example

    model, mode = config.split("/")
    _, m = score_example(task, pred, ref)
    m["bertscore_f1"] = 1.0 if pred == ref else 0.5
    return {
        "id": f"{task}-{ref}",  # the same question in every configuration (paired by id)
        "task": task,
        "category": category,
        "config": config,
        "model": model,
        "mode": mode,
        "prediction": pred,
        "reference": ref,
        "metrics": m,
    }


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
    assert (
        tuned["tasks"]["distance"]["mre"] == pytest.approx(0.1)
        and tuned["tasks"]["distance"]["share_mre_lt_0.2"] == 1.0
    )
    md = markdown_tables(summary)
    assert "| base/none | 3 | 0.333 |" in md and "| tuned/none | 1.000 | 1.000 |" in md
    # With the evidence the bench adds: every figure with its interval, the contrast, the definitions.
    from medzoo.bench.evidence import evidence
    from medzoo.bench.report import definitions

    summary["evidence"] = evidence(records, ["base/none", "tuned/none"])
    summary["definitions"] = definitions(summary)
    md = markdown_tables(summary)
    wilson = summary["evidence"]["intervals"]["base/none"]["all"]["exact_match"]
    assert f"| base/none | 3 | 0.333 [{wilson['low']:.3f}, {wilson['high']:.3f}] |" in md
    assert "| tuned vs base (none prompt) | vqa: exact_match | +0.500" in md
    assert "- `share_mre_lt_0.2`: share of reference values answered within 20% relative error" in md
    write_reports(tmp_path, summary)
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows[0] == "config,model,mode,task,metric,value,ci_low,ci_high"
    presence = next(r for r in rows if r.startswith("tuned/none,tuned,none,vqa:presence,accuracy,1.0,"))
    assert float(presence.split(",")[-2]) < 1.0 == float(presence.split(",")[-1]), "Wilson interval of 1 of 1"
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text())["configs"][1]["config"] == "tuned/none"


def _base_config(folder: Path, model_type: str, arch: str) -> str:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": [arch]}))
    return str(folder)


def test_adapters_vllm_cannot_serve_are_detected(tmp_path):
    """LoRA on the language model, and on the vision tower where vLLM's model class serves it
    (Qwen2.5-VL in vLLM 0.32), go to one engine; modules_to_save, tower LoRA on a family vLLM gives
    no tower LoRA, or an architecture vLLM does not know, get a merged copy and a reason."""
    import torch
    from safetensors.torch import save_file

    from medzoo.bench import choose_lora_mode
    from medzoo.merge import adapter_vllm_blocker
    from medzoo.models.registry import get_family

    qwen = get_family("qwen2_5_vl")
    qwen_base = _base_config(tmp_path / "qwen", "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration")
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "modules_to_save": None}))
    save_file(
        {"base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, 64)},
        str(lm / "adapter_model.safetensors"),
    )
    assert adapter_vllm_blocker(lm, qwen, qwen_base) is None
    vision = tmp_path / "vision"
    vision.mkdir()
    (vision / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "modules_to_save": None}))
    save_file(
        {"base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight": torch.zeros(8, 64)},
        str(vision / "adapter_model.safetensors"),
    )
    assert adapter_vllm_blocker(vision, qwen, qwen_base) is None, "vLLM 0.32 serves Qwen2.5-VL tower LoRA"
    onevision = _base_config(tmp_path / "ov", "llava_onevision", "LlavaOnevisionForConditionalGeneration")
    reason = adapter_vllm_blocker(vision, qwen, onevision)
    assert "vision tower" in reason and "serves no LoRA on LlavaOnevisionForConditionalGeneration" in reason, reason
    unknown = _base_config(tmp_path / "unknown", "qwen2_5_vl", "Qwen2_5_VLForSomethingElse")
    assert "does not know the architecture Qwen2_5_VLForSomethingElse" in adapter_vllm_blocker(vision, qwen, unknown)
    (lm / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "modules_to_save": ["lm_head"]}))
    assert "modules_to_save" in adapter_vllm_blocker(lm, qwen, qwen_base)
    assert choose_lora_mode("auto", {}, on_cuda=False, weight_bytes=80 << 20) == "lora"  # tiny model on CPU
    assert choose_lora_mode("auto", {}, on_cuda=False, weight_bytes=8 << 30) == "merged"  # 2B+ on CPU
    assert choose_lora_mode("auto", {}, on_cuda=True, weight_bytes=8 << 30) == "lora"
    assert choose_lora_mode("merged", {}, on_cuda=True) == "merged"
    assert choose_lora_mode("lora", {"tuned": "why"}) == "merged"
    with pytest.raises(ValueError, match="--lora-mode"):
        choose_lora_mode("fast", {})


def test_engine_auto_follows_the_device_the_family_and_the_measured_crossover():
    from medzoo.bench import choose_engine
    from medzoo.bench.plan import CPU_VLLM_CROSSOVER_GENERATIONS as crossover

    assert choose_engine("auto", 60, "qwen2_5_vl", on_cuda=True)[0] == "vllm"
    engine, reason = choose_engine("auto", crossover - 1, "qwen2_5_vl", on_cuda=False)
    assert engine == "hf" and "below the measured crossover" in reason
    assert choose_engine("auto", crossover, "qwen2_5_vl", on_cuda=False)[0] == "vllm"
    engine, reason = choose_engine("auto", 10 * crossover, "gemma3", on_cuda=False)
    assert engine == "hf" and "Gemma 3" in reason
    assert choose_engine("vllm", 6, "gemma3", on_cuda=False) == ("vllm", "--engine vllm (chosen)")
    assert choose_engine("auto", 6, "qwen2_5_vl", on_cuda=False, lora_mode="merged") == (
        "vllm", "auto: --lora-mode merged is a vLLM setting"
    )  # fmt: skip
    with pytest.raises(ValueError, match="--engine: expected one of auto, vllm, hf"):
        choose_engine("fast", 6, "gemma3", on_cuda=False)


def test_bench_without_adapter_says_what_to_do(tmp_path):
    """Asked for the tuned model explicitly (by default bench falls back to the base alone, e2e)."""
    run_dir = f"run_dir={tmp_path / 'none'}"
    proc = run_medzoo("bench", "phantom-tiny", "--models", "base,tuned", "--set", run_dir, check=False)
    assert proc.returncode == 1
    assert "no trained adapter; run `medzoo train phantom-tiny` first" in proc.stderr


def _fake_run(run_dir: Path, base: str) -> Path:
    """A run folder as train leaves it (adapter + manifest), trained on `base`."""
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")
    manifest = {
        "medzoo_version": "0.1.0",
        "recipe": "phantom-tiny",
        "config_hash": "x",
        "base": base,
        "base_path": "/nowhere",
        "family": "qwen2_5_vl",
        "adapter_method": "lora",
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


@pytest.mark.parametrize("command", ["bench", "merge", "card"])
def test_a_stage_refuses_an_adapter_trained_on_another_base(tmp_path, command):
    run = _fake_run(tmp_path / "run", "zoo:tiny-qwen2.5-vl")
    proc = run_medzoo(
        command, "phantom-tiny", "--set", f"run_dir={run}", "--set", "base=zoo:tiny-qwen2-vl", check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {command}: the adapter in {run} was trained on base 'zoo:tiny-qwen2.5-vl', but the recipe asks "
        "for 'zoo:tiny-qwen2-vl'; train it on that base first or use another run_dir"
    ]


def test_a_manifest_not_written_by_train_is_one_line(tmp_path):
    run = _fake_run(tmp_path / "run", "zoo:tiny-qwen2.5-vl")
    (run / "manifest.json").write_text('{"base": "zoo:tiny-qwen2.5-vl"}')
    proc = run_medzoo("bench", "phantom-tiny", "--set", f"run_dir={run}", check=False)
    assert proc.returncode == 1
    assert (
        "manifest.json: missing medzoo_version, recipe, config_hash, base_path, family, adapter_method" in proc.stderr
    )
