"""What every command shares: option parsing helpers."""

from __future__ import annotations


def csv_list(value: str | None) -> list[str] | None:
    """A comma-separated option value as a list (None when empty)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def load_chosen_recipe(recipe: str | None, overrides=()):
    """The recipe named on the command line, or the one `choose_recipe` picks (said in one line)."""
    import click

    from medzoo.recipe import choose_recipe, load_recipe

    if recipe is None:
        choice = choose_recipe()
        click.echo(choice.line(), err=True)
        recipe = choice.recipe
    return load_recipe(recipe, list(overrides))
