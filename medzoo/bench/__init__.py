"""`medzoo bench`: every (model, prompt mode) configuration of a recipe on one evaluation split.

Engine (`engine="auto"`, the default, medzoo.bench.plan.choose_engine): vLLM on CUDA; on CPU
transformers below the measured crossover in generations and for Gemma 3, vLLM from it on.

vLLM: ONE vLLM engine for the base model with LoRA enabled; tuned models are LoRA
requests, so all configurations go through the same engine in batched calls that mix them. On
request (`lora_mode="merged"`, or when an adapter has weights vLLM's LoRA cannot serve) each
adapter is merged (medzoo.merge) and served by its own engine, one after the other.
`engine="hf"` is the transformers reference (batched left-padded generate).

Results folder (default <run_dir>/bench/<split>-<engine>, `-limit<N>` for a --limit bench):

    records.jsonl   one line per (config, example) ever answered here: prompt, prediction,
                    reference, parse, metrics, image key, and the producer digest (medzoo.bench.store)
    summary.json    per configuration: text metrics, per-task metrics, per-category accuracy, timing;
                    `evidence` (intervals, paired contrasts: medzoo.bench.evidence), `definitions`,
                    `provenance` (adapter digests, run, engine, split, limit, data fingerprint)
    summary.csv     the same, long format (config, model, mode, task, metric, value, ci_low, ci_high)
    summary.md      the tables printed at the end
    plot.png        primary metric per task, one bar per configuration, 95% intervals as error bars

Records are appended as each chunk finishes and reused by what produced them, so a killed bench
resumes without recomputing them, and another request (fewer modes, a limit) answers from them.
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
