"""`medzoo card` / `medzoo publish`: the card round-trips through huggingface_hub, the staged folder
is what gets uploaded, uploads are one commit, conflicts are refused, the token never leaks.

The Hub itself is the only fake here (a stand-in for `HfApi` at the API boundary)."""

import json
import os
from types import SimpleNamespace

import pytest
from conftest import REPO, run_medzoo

SECRET = "hf_medzooTestSecretToken0123456789"
TRAIN = [
    "--set",
    "data.n_train=24",
    "--set",
    "data.n_val=4",
    "--set",
    "data.n_test=4",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.max_steps=4",
    "--set",
    "train.eval_steps=1000",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (tiny) trained and benchmarked run."""
    run = tmp_path_factory.mktemp("publish") / "run"
    sets = ["--set", f"run_dir={run}", *TRAIN]
    run_medzoo("train", "phantom-tiny", *sets)
    run_medzoo("bench", "phantom-tiny", *sets, "--engine", "hf")
    return run


def _recipe(run, *edits):
    from medzoo.recipe import load_recipe

    return load_recipe(
        "phantom-tiny",
        [
            f"run_dir={run}",
            "data.n_train=24",
            "data.n_val=4",
            "data.n_test=4",
            "train.batch_size=4",
            "train.max_steps=4",
            "train.eval_steps=1000",
            *edits,
        ],
    )


def test_card_metadata_and_eval_results_round_trip(run, tmp_path):
    from huggingface_hub import ModelCard

    proc = run_medzoo(
        "card",
        "phantom-tiny",
        "--set",
        f"run_dir={run}",
        "--repo",
        "me/phantom-tiny",
        "--out",
        str(tmp_path / "README.md"),
    )
    assert "model card:" in proc.stdout
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data
    assert data.library_name == "peft" and data.pipeline_tag == "image-text-to-text" and data.license == "apache-2.0"
    assert {"medical", "vqa", "lora"} <= set(data.tags)
    summary = json.loads(next((run / "bench").glob("*/summary.json")).read_text())
    expected = {
        (c["mode"], "accuracy"): c["tasks"]["vqa"]["accuracy"] for c in summary["configs"] if c["model"] == "tuned"
    }
    got = {(r.metric_config, r.metric_type): r.metric_value for r in data.eval_results if r.metric_type == "accuracy"}
    assert got == {k: round(v, 4) for k, v in expected.items()}
    assert all(r.dataset_split == "test" and r.task_type == "image-text-to-text" for r in data.eval_results)
    text = card.text
    for heading in (
        "## Training",
        "## Evaluation",
        "## Export parity (GGUF)",
        "## How to use",
        "## Limitations",
        "## Medical-use disclaimer",
    ):
        assert heading in text
    assert (
        "| tuned/adaptive |" in text
        and "Not a medical device" in text
        and 'PeftModel.from_pretrained(model, "me/phantom-tiny")' in text
    )


def test_dry_run_stages_exact_folder_and_never_leaks_token(run):
    proc = run_medzoo(
        "publish",
        "phantom-tiny",
        "--set",
        f"run_dir={run}",
        "--repo",
        "me/phantom-tiny",
        "--dry-run",
        env={"HF_TOKEN": SECRET},
    )
    folder = run / "publish" / "me--phantom-tiny"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    adapter_files = {str(p.relative_to(run / "adapter")) for p in (run / "adapter").rglob("*") if p.is_file()}
    assert "adapter_config.json" in adapter_files and "adapter_model.safetensors" in adapter_files
    assert files == sorted(adapter_files | {"README.md", "bench_summary.json", "plot.png", "training_manifest.json"})
    assert "## Medical-use disclaimer" in (folder / "README.md").read_text(), "the card, not peft's placeholder README"
    for f in files:
        assert f"  {f}" in proc.stdout
        assert SECRET.encode() not in (folder / f).read_bytes()
    assert (folder / "adapter_model.safetensors").read_bytes() == (
        run / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    assert "not uploaded: --dry-run" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    assert "base_path" not in json.loads((folder / "training_manifest.json").read_text())
    # No local folder of the publisher's (run dir, medzoo home, checkout) in any published text file.
    local = [str(run.parent), os.environ["MEDZOO_HOME"], str(REPO)]
    for f in files:
        if f.endswith((".json", ".md", ".jinja", ".txt")):
            text = (folder / f).read_text()
            assert not any(p in text for p in local), f"{f} carries a local path"
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "zoo:tiny-qwen2.5-vl"


def test_publish_while_offline_is_one_line_and_keeps_the_staged_folder(run):
    proc = run_medzoo(
        "publish", "phantom-tiny", "--set", f"run_dir={run}", "--repo", "me/offline",
        env={"HF_TOKEN": SECRET, "HF_HUB_OFFLINE": "1"}, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: publish: the Hub cannot be reached (")
    assert "run again when online" in proc.stderr and (run / "publish" / "me--offline" / "README.md").exists()
    assert SECRET not in proc.stdout + proc.stderr


def test_no_token_means_dry_run(run, monkeypatch):
    from medzoo import publish

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(run / "empty-hf-home"))  # no stored login either
    result = publish.publish(_recipe(run), "me/phantom-tiny", log=lambda *_: None)
    assert not result.uploaded and "no Hugging Face token" in result.skipped_reason


class FakeHub:
    """Records what medzoo asks of the Hub API; `remote` holds files already in the repo."""

    instances = []

    def __init__(self, token=None):
        self.token, self.calls, self.remote = token, [], {}
        FakeHub.instances.append(self)

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None):
        self.calls.append(("create_repo", repo_id, private, exist_ok))

    def get_paths_info(self, repo_id, paths, revision=None):
        return [SimpleNamespace(path=p, blob_id=self.remote[p], lfs=None) for p in paths if p in self.remote]

    def upload_folder(self, repo_id, folder_path, commit_message, revision=None, repo_type=None):
        from pathlib import Path

        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, files, commit_message, revision))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")


def test_upload_is_one_commit_and_refuses_conflicts(run, monkeypatch, capsys):
    import huggingface_hub

    from medzoo import publish

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    FakeHub.instances.clear()
    recipe = _recipe(run)
    result = publish.publish(recipe, "me/phantom-tiny", private=True, revision="main", log=print)
    hub = FakeHub.instances[-1]
    assert hub.token == SECRET and result.uploaded
    assert hub.calls[0] == ("create_repo", "me/phantom-tiny", True, True)
    uploads = [c for c in hub.calls if c[0] == "upload_folder"]
    assert len(uploads) == 1, "one commit per publish"
    _, repo, files, message, revision = uploads[0]
    assert repo == "me/phantom-tiny" and revision == "main" and files == result.files and "README.md" in files
    assert message.startswith("medzoo publish phantom-tiny: adapter (config ")

    # A file in the repo with other content is not overwritten without --force ...
    class Conflicting(FakeHub):
        def __init__(self, token=None):
            super().__init__(token)
            self.remote = {"README.md": "0" * 40, "plot.png": publish._git_blob_sha(result.folder / "plot.png")}

    monkeypatch.setattr(huggingface_hub, "HfApi", Conflicting)
    with pytest.raises(publish.PublishError, match="README.md.*--force"):
        publish.publish(recipe, "me/phantom-tiny", log=print)
    assert not [c for c in FakeHub.instances[-1].calls if c[0] == "upload_folder"]
    forced = publish.publish(recipe, "me/phantom-tiny", force=True, log=print)
    assert forced.uploaded and forced.unchanged == ["plot.png"]
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err


def test_bad_repo_and_missing_artefacts_are_clear(run):
    bad = run_medzoo(
        "publish", "phantom-tiny", "--set", f"run_dir={run}", "--repo", "no-owner", "--dry-run", check=False
    )
    assert bad.returncode == 1 and "--repo: expected OWNER/NAME, got 'no-owner'" in bad.stderr
    missing = run_medzoo(
        "publish",
        "phantom-tiny",
        "--set",
        f"run_dir={run}",
        "--repo",
        "me/x",
        "--what",
        "gguf",
        "--dry-run",
        check=False,
    )
    assert missing.returncode == 1 and "run `medzoo export phantom-tiny --gguf` first" in missing.stderr


# --- numbers tied to the adapter they describe (the run's manifest is the source of truth) ---


def _sets(run):
    return ["--set", f"run_dir={run}", *TRAIN]


@pytest.mark.parametrize(
    "edit,field", [("prompts.train_mode=static", "prompts.train_mode"), ("image.max_pixels=20000", "image.max_pixels")]
)
def test_a_recipe_edited_where_the_adapter_would_see_it_is_refused_by_every_later_stage(run, edit, field, tmp_path):
    from medzoo.bench import resolve_models
    from medzoo.card import build_card
    from medzoo.errors import StateMismatch
    from medzoo.export import export_gguf
    from medzoo.merge import merge_for_recipe
    from medzoo.serve import vllm_server

    r = _recipe(run, edit)
    stages = {
        "bench": lambda: resolve_models(r, ["base", "tuned"], []),
        "merge": lambda: merge_for_recipe(r, out=str(tmp_path / "merged")),
        "export": lambda: export_gguf(r, out=str(tmp_path / "export"), log=lambda *_: None),
        "serve": lambda: vllm_server(r),
        "card": lambda: build_card(r),
    }
    for stage, call in stages.items():
        with pytest.raises(StateMismatch, match=rf"^{stage}: the recipe changed since .*{field} is .*, trained with"):
            call()
    assert not (tmp_path / "merged").exists() and not (tmp_path / "export").exists()
    cli = run_medzoo("serve", "phantom-tiny", *_sets(run), "--set", edit, "--print-only", check=False)
    assert cli.returncode == 1 and cli.stderr.count("\n") == 1 and field in cli.stderr


def test_training_settings_edited_after_training_come_from_the_manifest(run):
    from medzoo.card import build_card

    manifest = json.loads((run / "manifest.json").read_text())
    trained_lr = manifest["trained_recipe"]["train"]["lr"]
    card = str(build_card(_recipe(run, "train.lr=0.5", "adapter.r=64")))
    assert f"| learning rate / scheduler | {trained_lr} / " in card and "0.5 /" not in card
    assert f"r={manifest['trained_recipe']['adapter']['r']}," in card and "r=64" not in card
    # bench may run with the edit (it does not change what the adapter sees) and records it
    run_medzoo("bench", "phantom-tiny", *_sets(run), "--engine", "hf", "--set", "train.lr=0.5", "--limit", "2")
    prov = json.loads((run / "bench" / "test-hf-limit2" / "summary.json").read_text())["provenance"]
    assert prov["run"]["recipe_changes_since_training"] == ["train.lr"]
    assert prov["run"]["adapter_digest"] == manifest["adapter_digest"] == prov["models"]["tuned"]["adapter_digest"]


def test_after_a_full_bench_other_prompt_modes_and_a_limit_answer_from_its_records(run):
    full = json.loads((run / "bench" / "test-hf" / "summary.json").read_text())
    adaptive = run_medzoo("bench", "phantom-tiny", *_sets(run), "--engine", "hf", "--prompts", "adaptive")
    assert "every answer asked for is already in" in adaptive.stdout and "generations (" not in adaptive.stdout
    again = json.loads((run / "bench" / "test-hf" / "summary.json").read_text())
    assert [c["config"] for c in again["configs"]] == [c["config"] for c in full["configs"]], "the view keeps its modes"
    # the printed table: each figure with its interval, then the paired contrasts and definitions
    row = next(line for line in adaptive.stdout.splitlines() if line.startswith("| tuned/adaptive | 4 |"))
    assert row.count("[") >= 4
    assert (
        "**paired contrasts**" in adaptive.stdout
        and "| tuned vs base (adaptive prompt) | vqa: exact_match |" in adaptive.stdout
    )
    assert "- `token_f1`: SQuAD token F1" in adaptive.stdout

    limited = run_medzoo(
        "bench", "phantom-tiny", *_sets(run), "--engine", "hf", "--prompts", "adaptive", "--limit", "3"
    )
    assert "6 answers reused from the run's other bench folders" in limited.stdout
    assert "generations (" not in limited.stdout

    def answers(folder):
        return {
            (r["config"], r["id"]): r["prediction"]
            for r in map(json.loads, (run / "bench" / folder / "records.jsonl").read_text().splitlines())
        }

    full_answers, limited_answers = answers("test-hf"), answers("test-hf-limit3")
    assert len(limited_answers) == 6 and all(full_answers[k] == v for k, v in limited_answers.items())


def test_the_card_reports_only_a_bench_of_its_own_adapter_on_the_whole_split(run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from medzoo.card import build_card

    other = tmp_path / "other-adapter"
    shutil.copytree(run / "adapter", other)
    weights = load_file(other / "adapter_model.safetensors")
    name = next(k for k in weights if "lora_B" in k)
    weights[name] = weights[name] + 0.01  # another adapter: the same shape, other weights
    save_file(weights, other / "adapter_model.safetensors")

    run_medzoo("bench", "phantom-tiny", *_sets(run), "--engine", "hf", "--adapter", str(other))
    run_medzoo("bench", "phantom-tiny", *_sets(run), "--engine", "hf", "--limit", "2")
    card = build_card(_recipe(run))
    assert card.data.eval_results is None, "no model-index of another adapter or of a subset"
    assert "Not benchmarked: no bench of this adapter on the whole split" in card.text
    assert "test-hf (another adapter)" in card.text and "test-hf-limit2 (only the first 2 examples)" in card.text
    _, files = _stage(run)
    assert "bench_summary.json" not in files and "plot.png" not in files

    own = run_medzoo("bench", "phantom-tiny", *_sets(run), "--engine", "hf")
    assert "every answer asked for is already in" in own.stdout, "its own answers are still in the folder"
    card = build_card(_recipe(run))
    assert card.data.eval_results and "paired contrasts" in card.text and "Not benchmarked" not in card.text


def _stage(run):
    from medzoo.publish import stage

    return stage(_recipe(run), "me/x", ["adapter"], out=run / "publish-check")
