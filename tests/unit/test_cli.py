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
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'tiny-qwen2.5-vl'" in lines[0]


def test_bad_override_is_one_line_error():
    proc = run_medzoo("recipes", "show", "phantom-tiny", "--set", "train.lr=fast", check=False)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == "error: recipes/phantom-tiny.yaml: train.lr: expected a positive number, got 'fast' (from --set)"
    )


def test_recipes_list_shows_descriptions():
    out = run_medzoo("recipes", "list").stdout
    assert "phantom-tiny " in out and "zoo:tiny-qwen2.5-vl" in out
    assert "phantom-tiny-gemma" in out and "INVALID" not in out


def test_a_bug_inside_a_command_shows_its_traceback():
    """A KeyError raised by a bug is not dressed up as a one-line user error."""
    code = (
        "import medzoo.zoo as z\n"
        "def broken(name):\n"
        "    return {}['no-such-key']\n"
        "z.zoo_entry = broken\n"
        "from medzoo.cli import main\n"
        "main(['zoo', 'build', 'tiny-qwen2-vl', '--out', 'unused'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'no-such-key'" in proc.stderr
    assert not any(line.startswith("error:") for line in proc.stderr.splitlines())


def test_debug_shows_the_traceback_of_an_expected_error():
    plain = run_medzoo("zoo", "build", "tiny-nothing", check=False)
    assert plain.returncode == 1 and plain.stderr.startswith("error: unknown zoo model 'tiny-nothing'")
    assert "Traceback" not in plain.stderr
    debug = run_medzoo("--debug", "zoo", "build", "tiny-nothing", check=False)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "UnknownName: unknown zoo model 'tiny-nothing'" in debug.stderr


def test_usage_errors_stay_clicks_exit_2():
    proc = run_medzoo("bench", "--engine", "nope", check=False)
    assert proc.returncode == 2 and "Invalid value for '--engine'" in proc.stderr
    proc = run_medzoo("zoo", "build", check=False)
    assert proc.returncode == 2 and "Missing argument 'NAME'" in proc.stderr


def test_progress_bars_written_to_a_log_update_sparsely(tmp_path):
    """A bench or training log in CI used to hold hundreds of carriage-return updates per bar."""
    out = tmp_path / "phantom"
    proc = run_medzoo("data", "phantom", "--task", "vqa", "--n", "300", "--n-val", "5", "--n-test", "5",
                      "--out", str(out))  # fmt: skip
    updates = proc.stderr.count("\r")
    assert "phantom" in proc.stderr and updates < 20, updates
