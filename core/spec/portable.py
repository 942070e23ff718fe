"""A run's recipe as `featherweight run` reproduces it elsewhere: uploads named by their file name."""

from __future__ import annotations

from pathlib import Path

from core.spec.recipe import Recipe


def portable_recipe(results: dict) -> Recipe:
    """The run's recipe as `featherweight run` reproduces it: uploaded files named by their file name (put them
    next to the recipe), samples unchanged."""
    recipe = Recipe.from_dict(dict(results.get("recipe") or {}))

    def portable(spec):
        if spec and not spec.startswith("sample:"):
            return Path(spec).name
        return spec

    return recipe.replace(model=portable(recipe.model or results.get("model")),
                          data=portable(recipe.data if recipe.data is not None else results.get("data")))
