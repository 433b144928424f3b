"""`medzoo bench`, `merge`, `export`, `card` and `publish`: measure a trained run and ship it."""

from __future__ import annotations

import json

import click

from medzoo.cli.common import csv_list, load_chosen_recipe


@click.command()
@click.argument("recipe", required=False)
@click.option(
    "--models",
    default=None,
    help="Comma-separated: base,tuned (default: both; the base alone while no adapter is trained).",
)
@click.option(
    "--prompts",
    "modes",
    default=None,
    help="Comma-separated prompt modes: none,static,adaptive (default: the recipe's).",
)
@click.option("--split", default=None, help="Evaluation split (default: the recipe's bench.split).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N examples.")
@click.option(
    "--engine",
    type=click.Choice(["auto", "vllm", "hf", "openai"]),
    default=None,
    help="Default: the recipe's bench.engine (auto: vLLM on CUDA; on CPU the faster one for the work size). "
    "openai: the OpenAI-compatible server at --base-url.",
)
@click.option("--base-url", default=None, help="--engine openai: the server's URL, e.g. http://127.0.0.1:8000/v1.")
@click.option(
    "--model", "served_model", default=None, help="--engine openai: the served base model (default: its first)."
)
@click.option(
    "--api-key", default=None, envvar="OPENAI_API_KEY", help="--engine openai: bearer token, if the server asks."
)
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    type=click.Path(),
    help="Evaluate this adapter folder (repeatable) instead of the recipe's.",
)
@click.option(
    "--lora-mode",
    type=click.Choice(["auto", "lora", "merged"]),
    default="auto",
    show_default=True,
    help="vLLM: serve adapters as LoRA requests on one engine, or merge each and serve it separately.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Results folder (default: <run_dir>/bench/<split>-<engine>).",
)
@click.option("--overwrite", is_flag=True, help="Replace a results folder made with other settings.")
@click.option(
    "--chunk-size",
    default=512,
    show_default=True,
    type=click.IntRange(min=1),
    help="Generations per batched engine call; records are saved after each (resume granularity).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def bench(
    recipe, models, modes, split, limit, engine, base_url, served_model, api_key, adapters, lora_mode, out, overwrite,
    chunk_size, overrides,
):  # fmt: skip
    """Evaluate base and tuned models under each prompt mode; print the table, write results + plot."""
    from medzoo.bench import run_bench

    r = load_chosen_recipe(recipe, overrides)
    result = run_bench(
        r,
        models=csv_list(models),
        modes=csv_list(modes),
        split=split,
        limit=limit,
        engine=engine,
        adapters=list(adapters),
        lora_mode=lora_mode,
        out=out,
        overwrite=overwrite,
        chunk_size=chunk_size,
        log=click.echo,
        server={"base_url": base_url, "model": served_model, "api_key": api_key} if base_url else None,
    )
    click.echo(result.markdown)
    t = result.summary["timing"]
    if t.get("generations"):
        click.echo(
            f"{t['generations']} generations in {t['total_s']:.1f} s (engine start {t.get('engine_start_s', 0):.1f} s, "
            f"generate {t.get('generate_s', 0):.1f} s = {t['generations_per_s']:.1f}/s)"
        )
    click.echo(f"results: {result.out} (records.jsonl, summary.json/.csv/.md, plot.png)")


# -- merge


@click.command()
@click.argument("recipe", required=False)
@click.option(
    "--engine",
    type=click.Choice(["vllm", "llama.cpp"]),
    default="vllm",
    show_default=True,
    help="vllm: base + adapter (LoRA) in vLLM's server. llama.cpp: llama-server on the GGUF export.",
)
@click.option(
    "--adapter", type=click.Path(), default=None, help="vllm: adapter folder (default: <run_dir>/adapter, if trained)."
)
@click.option(
    "--quant", default=None, help="llama.cpp: which GGUF of the export (default: q8_0 if exported, else f16)."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Default: 8000 (vllm), 8080 (llama.cpp).")
@click.option("--print-only", is_flag=True, help="Print the server command and an example request; start nothing.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def serve(recipe, engine, adapter, quant, host, port, print_only, overrides):
    """Serve the recipe's model through vLLM's or llama.cpp's OpenAI-compatible server, configured as training was."""
    from medzoo import serve as serving
    from medzoo.data.sources import first_rows
    from medzoo.export.commands import curl_request
    from medzoo.inference import prepare
    from medzoo.models.loading import recipe_base
    from medzoo.recipe import prompt_settings
    from medzoo.run import open_run, prompts_source

    r = load_chosen_recipe(recipe, overrides)
    base = recipe_base(r)
    if engine == "llama.cpp":
        server = serving.llama_cpp_server(r, host=host, port=port or 8080, quant=quant)
    else:
        server = serving.vllm_server(r, host=host, port=port or 8000, adapter=adapter, base=base)
    _, rows = first_rows(r.data, r.bench.split, 1)  # the request a bench sends for its first example
    trained = open_run(r, "serve")
    if trained:
        trained.check_image_settings(base.image_settings, "serve")
    source = prompts_source(r, trained)  # the prompts the adapter was trained with
    mode = source.prompts.train_mode
    messages = prepare(rows, base.processor, base.family, prompt_settings(source), mode, base.image_settings).messages[
        0
    ]
    model = "tuned" if "tuned" in server.models else serving.BASE_NAME
    if engine != "llama.cpp" and "tuned" not in server.models:
        click.echo(
            f"no adapter trained yet for {r.name} ({r.run_path() / 'adapter'}): serving the base model only; "
            f"train one with `medzoo train {r.name}`, or pass --adapter"
        )
    click.echo(f"server command:\n  {server.command_line()}")

    def ready():
        only = " --models tuned" if serving.BASE_NAME not in server.models else ""
        click.echo(f"\nserving {', '.join(server.models)} at {server.base_url} (Ctrl-C stops it)")
        click.echo(
            f"ask it (scan.png: an image in this folder):\n  {curl_request(server.base_url, messages, r.bench.max_new_tokens, model)}"
        )
        click.echo(f"bench it:\n  medzoo bench {r.name} --engine openai --base-url {server.base_url}{only}")

    if print_only:
        ready()
        return
    raise SystemExit(serving.run(server, on_ready=ready))


@click.command()
@click.argument("recipe", required=False)
@click.option("--adapter", type=click.Path(), default=None, help="Adapter folder (default: <run_dir>/adapter).")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: <run_dir>/merged)."
)
@click.option(
    "--check", "n_check", default=4, show_default=True, help="Examples whose logits must agree before saving."
)
@click.option("--force", is_flag=True, help="Merge again even if the folder holds this adapter's merge.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bfloat16", "float16", "float32"]),
    default="auto",
    show_default=True,
    help="The merged weights' dtype (auto: the base's own, e.g. bf16 for a Hub MedGemma).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def merge(recipe, adapter, out, n_check, force, dtype, overrides):
    """Merge the adapter into the full-precision base (checked logits) and save a loadable folder."""
    from medzoo.merge import merge_for_recipe

    r = load_chosen_recipe(recipe, overrides)
    info = merge_for_recipe(r, adapter=adapter, out=out, n_check=n_check, force=force, dtype=dtype, log=click.echo)
    click.echo(json.dumps(info, indent=2))


# -- export


@click.command()
@click.argument("recipe", required=False)
@click.option("--gguf", is_flag=True, required=True, help="Export GGUF (text model + mmproj) for llama.cpp / Ollama.")
@click.option("--quant", default="f16,q8_0,q4_k_m", show_default=True, help="Comma-separated: f16,q8_0,q4_k_m.")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: <run_dir>/export)."
)
@click.option(
    "--parity",
    "n_parity",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Bench examples in the parity check.",
)
@click.option(
    "--leave-output-tensor",
    is_flag=True,
    help="Keep output.weight unquantised (llama-quantize's flag): larger files, logits closest to f16.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def export(recipe, gguf, quant, out, n_parity, leave_output_tensor, overrides):
    """Merge, convert to GGUF + mmproj, quantise, write a Modelfile, and check parity with HF."""
    from medzoo.export import export_gguf

    r = load_chosen_recipe(recipe, overrides)
    result = export_gguf(
        r, quants=csv_list(quant), out=out, n_parity=n_parity, log=click.echo, leave_output_tensor=leave_output_tensor
    )
    p = result.parity
    click.echo(
        f"\nparity with the merged transformers model on {p['examples']} {p['split']} examples (greedy; task metric HF {p['reference_metric']:.3f}):"
    )
    click.echo("| quant | size MB | answers equal | task metric |")
    click.echo("|---|---|---|---|")
    for q in p["quantizations"]:
        click.echo(f"| {q['quant']} | {q['size_mb']:.1f} | {q['agreement']:.3f} | {q['metric']:.3f} |")
    click.echo(f"chat template in the GGUF renders the training prompt: {p['chat_template_matches_training']}")
    click.echo(f"llama.cpp tokenizes the training prompt like the HF tokenizer: {p['tokenization_matches_training']}")
    click.echo(f"wrote {result.out}: {', '.join(result.files)}")


# -- card / publish


@click.command()
@click.argument("recipe", required=False)
@click.option("--repo", default=None, help="OWNER/NAME the card's usage snippets point at.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Card file (default: <run_dir>/README.md).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def card(recipe, repo, out, overrides):
    """Write the Hugging Face model card (README.md) of a trained recipe."""
    from pathlib import Path

    from medzoo.atomic import write_text
    from medzoo.card import build_card

    r = load_chosen_recipe(recipe, overrides)
    path = Path(out) if out else r.run_path() / "README.md"
    write_text(path, str(build_card(r, repo_id=repo)))
    click.echo(f"model card: {path}")


@click.command()
@click.argument("recipe", required=False)
@click.option("--repo", required=True, help="Hub repository OWNER/NAME (created if missing).")
@click.option("--what", default="adapter", show_default=True, help="Comma-separated: adapter,merged,gguf.")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--revision", default=None, help="Branch to commit to.")
@click.option("--dry-run", is_flag=True, help="Only write and list the folder that would be uploaded.")
@click.option("--force", is_flag=True, help="Overwrite files that exist in the repo with different content.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def publish(recipe, repo, what, private, revision, dry_run, force, overrides):
    """Upload a trained recipe (card + artefacts) to the Hugging Face Hub in one commit."""
    from medzoo.publish import publish as run_publish

    r = load_chosen_recipe(recipe, overrides)
    result = run_publish(
        r, repo, what=csv_list(what), private=private, revision=revision, dry_run=dry_run, force=force, log=click.echo
    )
    click.echo(f"staged {len(result.files)} files in {result.folder}:")
    for f in result.files:
        click.echo(f"  {f}")
    click.echo(f"model card: {result.folder / 'README.md'}")
    if result.uploaded:
        click.echo(
            f"uploaded to {result.repo_id}: {result.commit_message}"
            + (f" ({result.commit_url})" if result.commit_url else "")
        )
    else:
        click.echo(f"not uploaded: {result.skipped_reason}")
