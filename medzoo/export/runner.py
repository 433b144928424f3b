"""`medzoo export --gguf` as one call: merge (if needed) -> convert + quantise -> parity -> Modelfile
and README -> the folder swapped into place -> the parity gate."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from medzoo.export.commands import run_snippet
from medzoo.export.convert import checked_quants, convert_all
from medzoo.export.ollama import default_system, modelfile, ollama_differences
from medzoo.export.parity import parity as check_parity
from medzoo.export.parity import raise_on_failed_parity


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    parity: dict


def export_gguf(
    recipe,
    quants: list[str] | None = None,
    out: str | None = None,
    n_parity: int = 50,
    log=print,
    leave_output_tensor: bool = False,
) -> ExportResult:
    """Merge (if needed), convert, quantise, write the Modelfile, and run the parity check."""
    quants = checked_quants(quants)
    final_dir = Path(out) if out else recipe.run_path() / "export"
    out_dir = final_dir.with_name(final_dir.name + ".partial")  # renamed into place when done
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    try:
        parity = _write_export(recipe, out_dir, quants, n_parity, leave_output_tensor, log)
    except BaseException:  # a failed or interrupted export leaves nothing half-written behind
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    from medzoo.atomic import swap_into_place

    swap_into_place(out_dir, final_dir)
    raise_on_failed_parity(parity, final_dir / "parity.json")
    listing = sorted(p.name for p in final_dir.iterdir() if p.is_file())
    return ExportResult(final_dir, listing, parity)


def _write_export(recipe, out_dir: Path, quants: list[str], n_parity: int, leave_output_tensor: bool, log) -> dict:
    """Everything an export folder holds, written into `out_dir`; returns the parity table."""
    from medzoo.atomic import write_json, write_text
    from medzoo.merge import merge_for_recipe, write_added_tokens_decoder
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import prompt_settings
    from medzoo.run import open_run, prompts_source

    trained = open_run(recipe, "export")
    prompts_of = prompts_source(recipe, trained)  # the Modelfile and parity prompt as training rendered them
    merged = recipe.run_path() / "merged"
    merge_for_recipe(recipe, out=str(merged), log=log)
    # The base's image settings and processor: what training used (the merged folder is not a zoo
    # folder, so resolving settings from it would lose the tiny models' resize and misstate the
    # pixel size in measurement prompts).
    base = recipe_base(recipe)
    if trained:
        trained.check_image_settings(base.image_settings, "export")
    write_added_tokens_decoder(merged, base.processor.tokenizer)  # a folder merged by an older medzoo lacks it

    t = time.perf_counter()
    files, mmproj = convert_all(merged, out_dir, recipe.name, quants, leave_output_tensor, log)
    log(f"export: converted and quantised in {time.perf_counter() - t:.1f} s")
    parity = check_parity(recipe, merged, base, files, mmproj, n_parity, leave_output_tensor, log, prompts_of)

    ps = prompt_settings(prompts_of)
    system = ps.static if parity["prompt_mode"] != "none" else default_system(base.processor)
    budget = parity["image_tokens"]
    example = parity["example"]
    parity["ollama"] = ollama_differences(base.family, example["prompt"], system, example["user_text"], budget)
    for warning in parity["ollama"]:
        log(f"export: Ollama: warning: {warning}")
    write_json(out_dir / "parity.json", parity)
    default_quant = "q8_0" if "q8_0" in files else "f16"
    model_file = modelfile(base.family, files[default_quant].name, mmproj.name, system, parity["ollama"])
    write_text(out_dir / "Modelfile", model_file)
    readme = run_snippet(
        recipe.name, files, mmproj, default_quant, budget, parity.get("example"), recipe.bench.max_new_tokens
    )
    write_text(out_dir / "README.md", readme)
    return parity
