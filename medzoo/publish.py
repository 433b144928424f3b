"""`medzoo publish`: stage a trained recipe as a Hub model repository and upload it in one commit.

The staged folder is exactly what is uploaded: README.md (the model card), the chosen artefacts
(adapter, merged model, GGUF export), the bench plot and summary, and the training manifest.
`--dry-run`, or no token, stops after staging and lists the folder.

The token comes from huggingface_hub's own lookup (HF_TOKEN or `hf auth login`) and is only ever
handed to `HfApi`; it is never printed or written (tests check the staged files and the output).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from medzoo.errors import InvalidValue, MedzooError, MissingState

ARTEFACTS = ("adapter", "merged", "gguf")


class PublishError(MedzooError, RuntimeError):
    pass


@dataclass
class PublishResult:
    folder: Path
    files: list[str]
    uploaded: bool
    repo_id: str
    commit_message: str
    commit_url: str | None = None
    skipped_reason: str | None = None
    unchanged: list[str] = field(default_factory=list)


def _copy_tree(src: Path, dest: Path, skip=()) -> None:
    for p in sorted(src.rglob("*")):
        if p.is_file() and not any(part in skip for part in p.relative_to(src).parts):
            target = dest / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)


def stage(
    recipe, repo_id: str, what: list[str], out: Path | None = None, export_dir: Path | None = None
) -> tuple[Path, list[str]]:
    """Write the folder that would be uploaded (atomically) and return it with its file list."""
    from medzoo.atomic import replace_dir, write_json
    from medzoo.card import bench_for_card, build_card
    from medzoo.run import read_manifest

    for w in what:
        if w not in ARTEFACTS:
            raise InvalidValue(f"--what: expected some of {', '.join(ARTEFACTS)}, got {w!r}")
    run = recipe.run_path()
    export_dir = export_dir or run / "export"
    sources = {"adapter": run / "adapter", "merged": run / "merged", "gguf": export_dir}
    for w in what:
        if not sources[w].exists():
            hint = {
                "adapter": f"medzoo train {recipe.name}",
                "merged": f"medzoo merge {recipe.name}",
                "gguf": f"medzoo export {recipe.name} --gguf",
            }[w]
            raise MissingState(f"{sources[w]}: nothing to publish for --what {w}; run `{hint}` first")
    card = build_card(
        recipe,
        repo_id=repo_id,
        what="adapter" if what == ["adapter"] or "merged" not in what else "merged",
        export_dir=export_dir,
    )
    out = out or run / "publish" / repo_id.replace("/", "--")
    with replace_dir(out) as tmp:
        # peft writes its own placeholder README.md into adapter folders: ours is the card.
        if "adapter" in what:
            _copy_tree(sources["adapter"], tmp, skip={"README.md"})  # at the root: PeftModel.from_pretrained(repo)
        if "merged" in what:
            _copy_tree(sources["merged"], tmp / "merged" if "adapter" in what else tmp, skip={"README.md"})
        if "gguf" in what:
            _copy_tree(sources["gguf"], tmp / "gguf", skip={"work", "README.md"})
        (tmp / "README.md").write_text(str(card))
        # The bench the card reports (this adapter, the whole split), or none.
        bench_dir, _ = bench_for_card(run, read_manifest(run, recipe.name).adapter_digest)
        if bench_dir:
            shutil.copy2(bench_dir / "plot.png", tmp / "plot.png")
            summary = json.loads((bench_dir / "summary.json").read_text())
            write_json(tmp / "bench_summary.json", without_local_paths(summary))
        manifest = json.loads((run / "manifest.json").read_text())
        manifest.pop("base_path", None)  # a local path means nothing to readers of the repo
        write_json(tmp / "training_manifest.json", without_local_paths(manifest))
        for config in tmp.rglob("adapter_config.json"):  # peft records the local folder the base was loaded from
            adapter_config = json.loads(config.read_text())
            adapter_config["base_model_name_or_path"] = recipe.base
            write_json(config, adapter_config)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return out, files


def without_local_paths(value):
    """JSON with every absolute local path cut to its last part: published files must not carry
    the publisher's folders (user names, mount points)."""
    if isinstance(value, dict):
        return {k: without_local_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_local_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        return Path(value).name
    return value


def _git_blob_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def conflicts(api, repo_id: str, folder: Path, files: list[str], revision: str | None) -> tuple[list[str], list[str]]:
    """(files in the repo with different content, files already identical)."""
    remote = {f.path: f for f in api.get_paths_info(repo_id, files, revision=revision) if hasattr(f, "blob_id")}
    changed, same = [], []
    for name in files:
        r = remote.get(name)
        if r is None:
            continue
        local = folder / name
        lfs = getattr(r, "lfs", None)
        equal = (lfs.sha256 == _sha256(local)) if lfs else (r.blob_id == _git_blob_sha(local))
        (same if equal else changed).append(name)
    return changed, same


def publish(
    recipe,
    repo_id: str,
    what: list[str] | None = None,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    out: Path | None = None,
    log=print,
) -> PublishResult:
    """Stage, then (unless dry run / no token) create the repo if missing and upload in one commit."""
    from huggingface_hub import get_token

    if "/" not in repo_id or repo_id.count("/") != 1:
        raise InvalidValue(f"--repo: expected OWNER/NAME, got {repo_id!r}")
    what = list(what or ["adapter"])
    folder, files = stage(recipe, repo_id, what, out)
    message = f"medzoo publish {recipe.name}: {', '.join(what)} (config {recipe.config_hash()})"
    token = get_token()
    if dry_run or not token:
        reason = "--dry-run" if dry_run else "no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
        return PublishResult(folder, files, False, repo_id, message, skipped_reason=reason)

    with _hub_errors(folder):
        info, same = _upload(token, repo_id, folder, files, message, private, revision, force)
    return PublishResult(
        folder, files, True, repo_id, message, commit_url=getattr(info, "commit_url", None), unchanged=same
    )


def _upload(token, repo_id, folder, files, message, private, revision, force):
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    changed, same = conflicts(api, repo_id, folder, files, revision)
    if changed and not force:
        raise PublishError(
            f"{repo_id}: {len(changed)} file(s) already exist with different content ({', '.join(changed[:3])}); pass --force to overwrite"
        )
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=message, revision=revision, repo_type="model"
    )
    return info, same


@contextlib.contextmanager
def _hub_errors(folder: Path):
    """The Hub unreachable (offline, HF_HUB_OFFLINE=1, DNS, refused) or refusing the token is the
    user's to fix: one line, and the staged folder stays ready for the next try."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except (ConnectionError, TimeoutError, httpx.TransportError) as e:  # HF_HUB_OFFLINE=1 raises a ConnectionError
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise PublishError(
            f"publish: the Hub cannot be reached ({first}); {folder} is staged, run again when online"
        ) from e
    except HfHubHTTPError as e:
        first = str(e).splitlines()[0][:200]
        raise PublishError(f"publish: the Hub refused the upload ({first}); {folder} is staged") from e
