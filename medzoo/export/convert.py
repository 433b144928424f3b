"""llama.cpp's converter and quantiser: merged HF folder -> f16 GGUF (+ mmproj) -> quantised GGUFs.

The converter is llama.cpp's own `convert_hf_to_gguf.py` (with its `conversion/` package and
`gguf-py`), taken from the `llama-cpp-python` sdist on PyPI of the same version as the installed
binding and cached under $MEDZOO_HOME, and run through `medzoo.export.gguf_convert` (medzoo's
corrections); quantisation uses the binding's `llama_model_quantize`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from medzoo.errors import InvalidValue, MedzooError

LLAMA_CPP_PYTHON = "0.3.36"
QUANTS = {"f16": 1, "q8_0": 7, "q4_k_m": 15}  # llama_ftype values (LLAMA_FTYPE_MOSTLY_*)


class ExportError(MedzooError, RuntimeError):
    pass


def bootstrap_build_done(built: Path) -> bool:
    """Whether tools/build_llama_cpp.sh finished a build of this version in `built`.

    Its stamp is `.built-<version>-<hash of the applied patches>`: any patch set of this version has
    the same converter files (the patches touch the C++ tools only)."""
    return any(built.glob(f".built-{LLAMA_CPP_PYTHON}-*")) or (built / f".built-{LLAMA_CPP_PYTHON}").exists()


def converter_dir(log=print) -> Path:
    """llama.cpp's converter files from the llama-cpp-python sdist: the bootstrap's copy in the venv,
    else fetched once (pip download) into $MEDZOO_HOME."""
    from medzoo.atomic import build_dir
    from medzoo.paths import medzoo_home

    built = Path(sys.prefix) / "llama.cpp"  # tools/build_llama_cpp.sh's copy of the same source
    if bootstrap_build_done(built) and (built / "src" / "convert_hf_to_gguf.py").exists():
        return built / "src"
    dest = medzoo_home() / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (dest / "convert_hf_to_gguf.py").exists():
        return dest
    log(f"export: fetching llama.cpp's converter (llama-cpp-python=={LLAMA_CPP_PYTHON} sdist) ...")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                # only this package as an sdist: `:all:` would also build every build dependency
                # from source (2 cores, empty pip cache: still running after 11 min, vs 17 s for this)
                "--no-binary",
                "llama-cpp-python",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ExportError(f"could not download the llama-cpp-python sdist: {proc.stderr.strip().splitlines()[-1:]}")
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
        with build_dir(dest) as out, tarfile.open(sdist) as tar:
            for m in tar.getmembers():
                rel = m.name[len(prefix) :] if m.name.startswith(prefix) else None
                if rel and rel.startswith(wanted) and (m.isfile() or m.isdir()):
                    m.name = rel
                    tar.extract(m, out, filter="data")
    return dest


def convert(model_dir: Path, out_file: Path, mmproj: bool, log=print) -> Path:
    """Run convert_hf_to_gguf.py (f16). Returns the file written."""
    conv = converter_dir(log)
    env = {**os.environ, "NO_LOCAL_GGUF": ""}  # medzoo.export.gguf_convert puts the converter's gguf-py on the path
    # through medzoo.export.gguf_convert: the converter plus medzoo's corrections (Gemma 3 layer pattern, template)
    cmd = [
        sys.executable,
        "-m",
        "medzoo.export.gguf_convert",
        str(conv),
        str(model_dir),
        "--outfile",
        str(out_file),
        "--outtype",
        "f16",
    ]
    if mmproj:
        cmd.append("--mmproj")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ExportError(
            f"convert_hf_to_gguf.py{' --mmproj' if mmproj else ''} failed on {model_dir}: {' | '.join(tail)}"
        )
    if mmproj:  # the converter prefixes the output name with "mmproj-"
        produced = out_file.with_name("mmproj-" + out_file.name)
        if produced.exists():
            produced.rename(out_file)
    if not out_file.exists():
        raise ExportError(f"convert_hf_to_gguf.py did not write {out_file}")
    return out_file


def quantize(src: Path, dest: Path, quant: str, leave_output_tensor: bool = False) -> Path:
    """llama.cpp's quantiser; `leave_output_tensor` keeps output.weight as in the f16 file
    (llama-quantize --leave-output-tensor): larger, and the logits stay closest to f16."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = os.cpu_count() or 1
    params.quantize_output_tensor = not leave_output_tensor
    tmp = dest.with_name(f".{dest.name}.tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.exists():
        raise ExportError(f"llama_model_quantize({quant}) failed on {src} (code {rc})")
    os.replace(tmp, dest)
    return dest


def checked_quants(quants: list[str] | None) -> list[str]:
    """The asked quantisations (default: all), f16 first when missing: the others are made from it."""
    quants = quants or list(QUANTS)
    for q in quants:
        if q not in QUANTS:
            raise InvalidValue(f"--quant: expected some of {', '.join(QUANTS)}, got {q!r}")
    return quants if "f16" in quants else ["f16", *quants]


def convert_all(merged: Path, out_dir: Path, name: str, quants, leave_output_tensor: bool, log):
    """f16 text model + f16 mmproj, then each other quantisation from the f16 file."""
    files = {"f16": convert(merged, out_dir / f"{name}-f16.gguf", mmproj=False, log=log)}
    mmproj = convert(merged, out_dir / f"mmproj-{name}-f16.gguf", mmproj=True, log=log)
    for q in quants:
        if q != "f16":
            files[q] = quantize(files["f16"], out_dir / f"{name}-{q}.gguf", q, leave_output_tensor)
    return files, mmproj
