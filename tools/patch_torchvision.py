"""Make PyPI's CUDA torchvision importable next to CPU torch.

PyPI has no CPU build of torchvision 0.28 (the one matching torch 2.13). Its C++ ops fail to
register next to CPU torch, and `torchvision/_meta_registrations.py` then dies at import on
`register_fake("torchvision::nms")` for an op that does not exist. medzoo only needs torchvision's
Python parts (transformers' and vLLM's image/video preprocessing), so we guard those two
registrations the same way the file already guards its `register_meta` ones: register only when
the compiled ops loaded. Idempotent; a no-op when torchvision imports cleanly (e.g. a CUDA host).

Run with the virtualenv's python: `python tools/patch_torchvision.py`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

MARKER = "# medzoo: guarded register_fake"
GUARD = f"""
{MARKER}
def _medzoo_register_fake(op_name):
    def wrapper(fn):
        if torchvision.extension._has_ops():
            return torch.library.register_fake(op_name)(fn)
        return fn

    return wrapper

"""


def imports_cleanly() -> bool:
    return subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision not installed: nothing to patch")
        return 0
    target = Path(spec.origin).parent / "_meta_registrations.py"
    source = target.read_text()
    if MARKER in source:
        print(f"torchvision already patched ({target})")
    elif imports_cleanly():
        print("torchvision imports cleanly: nothing to patch")
        return 0
    else:
        anchor = '@register_meta("roi_align")'
        if anchor not in source or '@torch.library.register_fake("torchvision::' not in source:
            print(f"error: {target}: unexpected layout, cannot patch this torchvision version", file=sys.stderr)
            return 1
        patched = source.replace('@torch.library.register_fake("torchvision::', '@_medzoo_register_fake("torchvision::')
        patched = patched.replace(anchor, GUARD.lstrip("\n") + "\n" + anchor, 1)
        tmp = target.with_suffix(".py.medzoo-tmp")
        tmp.write_text(patched)
        tmp.replace(target)
        print(f"patched {target}")
    if not imports_cleanly():
        print("error: torchvision still fails to import after patching", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
