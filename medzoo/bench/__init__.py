"""`medzoo bench`: every (model, prompt mode) configuration of a recipe on one evaluation split.

Engine (`engine="auto"`, the default, medzoo.bench.plan.choose_engine): vLLM on CUDA; on CPU
transformers below the measured crossover in generations and for Gemma 3, vLLM from it on.

vLLM: ONE vLLM engine for the base model with LoRA enabled; tuned models are LoRA
requests, so all configurations go through the same engine in batched calls that mix them. On
request (`lora_mode="merged"`, or when an adapter has weights vLLM's LoRA cannot serve) each
adapter is merged (medzoo.merge) and served by its own engine, one after the other.
`engine="hf"` is the transformers reference (batched left-padded generate).

Results folder (default <run_dir>/bench/<split>-<engine>):

    spec.json       what was evaluated (a rerun with other settings refuses to mix into it)
    records.jsonl   one line per (config, example): prompt, prediction, reference, parse, metrics
    summary.json    per configuration: text metrics, per-task metrics, per-category accuracy, timing
    summary.csv     the same, long format (config, model, mode, task, metric, value)
    summary.md      the tables printed at the end
    plot.png        primary metric per task, one bar per configuration

Work happens in `<out>.partial/`; records are appended as each chunk finishes, so a killed bench
resumes without recomputing them, and the folder is renamed to `<out>` only when complete.
"""

from medzoo.bench.plan import BENCH_ENGINES, LORA_MODES, BenchModel, choose_engine, choose_lora_mode, resolve_models
from medzoo.bench.report import markdown_tables, summarize, write_reports
from medzoo.bench.runner import BenchResult, run_bench
from medzoo.bench.scoring import MEASUREMENT_VALUES, PRIMARY_METRIC, primary_score, score_example

__all__ = [
    "BENCH_ENGINES",
    "LORA_MODES",
    "MEASUREMENT_VALUES",
    "PRIMARY_METRIC",
    "BenchModel",
    "BenchResult",
    "choose_engine",
    "choose_lora_mode",
    "markdown_tables",
    "primary_score",
    "resolve_models",
    "run_bench",
    "score_example",
    "summarize",
    "write_reports",
]
