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


def _recipe(run):
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
