import subprocess
import sys

from conftest import run_medzoo


def test_help_does_not_import_heavy_libraries():
    code = "import sys; import medzoo.cli; heavy = {'torch', 'transformers', 'vllm', 'datasets'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_help_lists_only_working_commands():
    out = run_medzoo("--help").stdout
    for cmd in ("zoo", "data", "recipes", "generate"):
        assert cmd in out


def test_zoo_list_names_every_model():
    out = run_medzoo("zoo", "list").stdout
    for name in ("tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-gemma3"):
        assert name in out


def test_unknown_zoo_model_is_one_line_error():
    proc = run_medzoo("zoo", "build", "tiny-qwen25-vl", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'tiny-qwen2.5-vl'" in lines[0]


def test_bad_override_is_one_line_error():
    proc = run_medzoo("recipes", "show", "phantom-tiny", "--set", "train.lr=fast", check=False)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "error: recipes/phantom-tiny.yaml: train.lr: expected a positive number, got 'fast' (from --set)"
    )


def test_recipes_list_shows_descriptions():
    out = run_medzoo("recipes", "list").stdout
    assert "phantom-tiny " in out and "zoo:tiny-qwen2.5-vl" in out
    assert "phantom-tiny-gemma" in out and "INVALID" not in out
