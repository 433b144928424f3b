"""A private Hugging Face cache holding zoo models under real Hub ids (tests only).

The layout is the one huggingface_hub writes (hub/models--OWNER--NAME/{refs/main, snapshots/REV/}),
so with HF_HOME pointing here and HF_HUB_OFFLINE=1 every `from_pretrained("google/medgemma-4b-it")`
and `hf_hub_download` finds the tiny model exactly as it would find a downloaded one: the code paths
that treat a Hub id differently from a folder run without network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REVISION = "0" * 40


def hub_env(hf_home: Path) -> dict[str, str]:
    """The environment that makes a process find models in `hf_home`'s cache, offline."""
    return {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1"}


def place(hf_home: Path, repo_id: str, folder: Path) -> Path:
    """Copy a model folder into `hf_home`'s cache as `repo_id`; returns the snapshot folder."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    if not snapshot.exists():
        shutil.copytree(folder, snapshot)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(REVISION)
    return snapshot
