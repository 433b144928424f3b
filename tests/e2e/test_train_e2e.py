"""End to end (slow): `medzoo train`: adapters that learn, resume after a kill, QLoRA on CPU, curricula, the data cache."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MEDZOO, REPO, run_medzoo

pytestmark = pytest.mark.slow


# Small, fast settings layered on the shipped recipes.
FAST = [
    "--set",
    "data.n_train=48",
    "--set",
    "data.n_val=8",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.logging_steps=2",
    "--set",
    "train.eval_steps=1000",
]


def _adapter_tensors(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_train_writes_adapter_manifest_and_logs(tmp_path):
    run = tmp_path / "run"
    run_medzoo("train", "phantom-tiny", "--set", f"run_dir={run}", "--set", "train.max_steps=6", *FAST)
    adapter = run / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert (adapter / "chat_template.jinja").exists() or (adapter / "processor_config.json").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config_hash"] and manifest["data_fingerprint"] and manifest["medzoo_version"]
    assert manifest["base"] == "zoo:tiny-qwen2.5-vl" and manifest["adapter_method"] == "lora"
    assert manifest["stages"][0]["steps"] == 6
    assert manifest["trainable_parameters"] < manifest["total_parameters"] / 100
    assert list((run / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs"
    assert (run / "recipe.yaml").exists()
    # The weights, not adapter_config's target_modules: peft shortens that list to suffixes when
    # it is long, so it cannot say which tower a module sits in.
    lora_modules = {k.split(".lora_")[0] for k in _adapter_tensors(adapter)}
    assert lora_modules and all(".language_model." in m for m in lora_modules), "vision tower stays frozen by default"
    assert {m.rsplit(".", 1)[-1] for m in lora_modules} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }

    # `make demo` re-runs with --resume: a finished run is reused, not retrained.
    before = _adapter_tensors(adapter)
    again = run_medzoo(
        "train", "phantom-tiny", "--resume", "--set", f"run_dir={run}", "--set", "train.max_steps=6", *FAST
    )
    assert "already finished" in again.stdout
    after = _adapter_tensors(adapter)
    assert all((before[k] == after[k]).all() for k in before)


def test_training_that_diverges_stops_with_one_line_and_leaves_no_adapter(tmp_path):
    """lr=1e3 drives the loss to NaN within a few steps; that used to exit 0 with an all-NaN adapter
    and a NaN eval loss in the manifest, which bench then scored and publish staged."""
    run = tmp_path / "run"
    proc = run_medzoo(
        "train", "phantom-tiny", "--set", f"run_dir={run}", "--set", "train.lr=1e3", "--set", "train.max_steps=20",
        *FAST, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "training diverged" in error[0] and "learning rate 1000" in error[0]
    assert "Traceback" not in proc.stderr
    assert not (run / "adapter").exists() and not (run / "manifest.json").exists()
    card = run_medzoo("card", "phantom-tiny", "--set", f"run_dir={run}", check=False)
    assert card.returncode == 1 and "no trained run" in card.stderr


def test_dry_run_reports_sizes_and_memory(tmp_path):
    proc = run_medzoo(
        "train", "phantom-tiny", "--dry-run", "--set", f"run_dir={tmp_path / 'r'}", "--set", "train.max_steps=30", *FAST
    )
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["trainable_parameters"] > 0 and 0 < report["trainable_percent"] < 5
    assert report["examples_per_epoch"] == 48 and report["steps_per_epoch"] == 12 and report["total_steps"] == 30
    assert report["first_batch_loss_tokens"] >= 4 * 2  # answer + end-of-turn per example
    assert report["memory_estimate_mb"]["total"] > report["memory_estimate_mb"]["weights"] > 0
    assert not (tmp_path / "r" / "adapter").exists()


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    common = ["--set", "train.max_steps=16", "--set", "train.save_steps=4", *FAST]
    run_medzoo("train", "phantom-tiny", "--set", f"run_dir={tmp_path / 'full'}", *common)

    victim = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(MEDZOO), "train", "phantom-tiny", "--set", f"run_dir={victim}", *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    checkpoint = victim / "checkpoints" / "00-main" / "checkpoint-8"
    deadline = time.time() + 600
    while not (checkpoint / "medzoo-checkpoint-complete").exists():  # written once the whole checkpoint is
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (victim / "adapter").exists()
    import shutil

    new_lr = tmp_path / "new-lr"  # the same interrupted run, resumed with another learning rate
    shutil.copytree(victim, new_lr)
    for stale in (new_lr / "checkpoints" / "00-main").glob("checkpoint-*"):
        if int(stale.name.split("-")[1]) > 8:
            shutil.rmtree(stale)

    out = run_medzoo("train", "phantom-tiny", "--resume", "--set", f"run_dir={victim}", *common)
    assert "resuming from" in out.stdout
    a, b = _adapter_tensors(tmp_path / "full" / "adapter"), _adapter_tensors(victim / "adapter")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-5, k

    # --accept-recipe-changes with another lr: the optimiser follows it from the resumed step on
    # (the checkpoint's optimiser state held the old one), at the same point of the schedule.
    old_lr = json.loads((victim / "manifest.json").read_text())["trained_recipe"]["train"]["lr"]
    args = ["--set", f"run_dir={new_lr}", *common, "--set", f"train.lr={old_lr / 4}", "--accept-recipe-changes"]
    run_medzoo("train", "phantom-tiny", "--resume", *args)

    def logged_lrs(run):
        state = json.loads((run / "checkpoints" / "00-main" / "checkpoint-16" / "trainer_state.json").read_text())
        return {e["step"]: e["learning_rate"] for e in state["log_history"] if "learning_rate" in e}

    full, changed = logged_lrs(tmp_path / "full"), logged_lrs(new_lr)
    after = [s for s in full if s > 8]
    assert after and all(changed[s] == pytest.approx(full[s] / 4) for s in after), (full, changed)
    c = _adapter_tensors(new_lr / "adapter")
    assert any((a[k] - c[k]).abs().max().item() > 1e-6 for k in a), "the new lr changed the adapter"


def test_qlora_trains_on_cpu(tmp_path):
    run = tmp_path / "q"
    run_medzoo("train", "phantom-tiny-qlora", "--set", f"run_dir={run}", "--set", "train.max_steps=8", *FAST)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["adapter_method"] == "qlora"
    assert (
        manifest["quantized_4bit_layers"] == 28
    )  # 4 layers x 7 linear modules; vision and lm_head stay full precision
    stage = manifest["stages"][0]
    assert stage["eval_loss"] < stage["eval_loss_before"]


def test_curriculum_stages_continue_from_each_other(tmp_path):
    run = tmp_path / "c"
    proc = run_medzoo(
        "train",
        "phantom-tiny-curriculum",
        "--set",
        f"run_dir={run}",
        "--set",
        "data.n_train=24",
        "--set",
        "data.n_val=6",
        "--set",
        "train.batch_size=4",
    )
    manifest = json.loads((run / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [s["stage"] for s in stages] == ["00-vqa", "01-distance", "02-mixed"]
    assert [s["train_examples"] for s in stages] == [24, 24, 72]
    for prev, nxt in zip(stages, stages[1:]):
        assert nxt["initial_adapter_sha"] == prev["final_adapter_sha"]
    assert stages[0]["initial_adapter_sha"] != stages[0]["final_adapter_sha"]
    for s in stages:
        assert (run / "stages" / s["stage"] / "adapter_model.safetensors").exists()
    assert "stage 02-mixed" in proc.stdout


def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    err = tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen(
            [str(MEDZOO), "train", "phantom-tiny", "--set", f"run_dir={tmp_path / 'run'}", *FAST,
             "--set", "train.max_steps=2000"],
            stdout=subprocess.DEVNULL, stderr=f, cwd=REPO,
        )  # fmt: skip
        deadline = time.time() + 300
        while "train:" not in err.read_text(errors="replace"):  # the progress bar: steps are running
            assert proc.poll() is None and time.time() < deadline, err.read_text()[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
    last = err.read_text(errors="replace").strip().splitlines()[-1]
    assert last == "interrupted; continue with `medzoo train phantom-tiny --resume`", last
