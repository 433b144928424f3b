"""The `medzoo` command line: a thin layer over the library (argument parsing and printing only).

Nothing heavy is imported at module level, so `medzoo --help` stays instant. The commands live in
three modules by what they work on: zoo_data (models, datasets, recipes), runs (train, check, tune,
generate) and ship (bench, merge, export, card, publish).
"""

from __future__ import annotations

import os
import sys

import click

from medzoo.cli import runs, ship, zoo_data


class MedzooGroup(click.Group):
    """An expected error (medzoo.errors.MedzooError: bad input, missing state) is one line on stderr
    and exit 1; anything else is a bug and keeps its traceback. Usage errors stay click's (exit 2)."""

    def invoke(self, ctx):
        from medzoo.errors import MedzooError

        try:
            return super().invoke(ctx)
        except MedzooError as e:
            if os.environ.get("MEDZOO_DEBUG"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=MedzooGroup)
@click.version_option(package_name="medzoo")
@click.option("--debug", is_flag=True, help="Show the traceback of expected errors too (also MEDZOO_DEBUG=1).")
@click.option("--verbose", is_flag=True, help="Show the libraries' own warnings and logs too (also MEDZOO_VERBOSE=1).")
def main(debug, verbose):
    """medzoo: fine-tune, benchmark and ship medical vision-language models.

    A recipe (YAML in recipes/) pairs a base VLM with an adapter and a dataset. Start with
    `medzoo recipes list`.
    """
    if debug:
        os.environ["MEDZOO_DEBUG"] = "1"  # inherited by launched training processes too
    if verbose:
        os.environ["MEDZOO_VERBOSE"] = "1"
    from medzoo.quiet import quiet_third_party

    quiet_third_party()
    quiet_progress_when_logged()


def quiet_progress_when_logged() -> None:
    """Progress bars written to a log or CI (not a terminal) print every update as another
    carriage-return line; there they update every 30 s instead (tqdm reads TQDM_* defaults from
    the environment, so every bar, medzoo's and the libraries', and launched processes follow).
    A user's own TQDM_MININTERVAL wins."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "30")


for _command in (
    zoo_data.zoo,
    zoo_data.data,
    zoo_data.recipes,
    runs.train,
    runs.check,
    runs.tune,
    runs.generate,
    ship.bench,
    ship.serve,
    ship.merge,
    ship.export,
    ship.card,
    ship.publish,
):
    main.add_command(_command)
