"""Recipes: a YAML file that pairs a base VLM with an adapter, a dataset, prompts and settings.

The schema is the dataclasses below; `load_recipe` validates a YAML file against them with one-line
errors that name the file, the field and what was expected, e.g.

    recipes/x.yaml: adapter.r: expected a positive integer, got 'abc'

Unknown keys are errors with a close-match suggestion. `--set a.b=value` overrides are applied
before validation. Recipes are found by name in the recipe folders or by path.
"""

from medzoo.recipe.choose import DEFAULT_RECIPE, RecipeChoice, choose_recipe
from medzoo.recipe.load import available_recipes, find_recipe, load_recipe, parse_override, prompt_settings, recipe_dirs
from medzoo.recipe.schema import Recipe, RecipeError
from medzoo.recipe.validate import apply_values

__all__ = [
    "DEFAULT_RECIPE",
    "RecipeChoice",
    "choose_recipe",
    "Recipe",
    "RecipeError",
    "apply_values",
    "available_recipes",
    "find_recipe",
    "load_recipe",
    "parse_override",
    "prompt_settings",
    "recipe_dirs",
]
