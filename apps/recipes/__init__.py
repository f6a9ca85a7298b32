"""Recipes: whole unlearning systems (several runs plus post-processing steps over their outputs)
as one file, run end to end and resumably (``unlearn recipe run|list|show``). An application on
the core: it composes ``unlearn.engine.run`` and the ``post_process`` hook as a third party could."""

from .recipe import RESULT_FILE, PostStep, Recipe, StepContext, builtin_recipes, find_recipe, load_recipe, run_recipe

__all__ = [
    "Recipe",
    "PostStep",
    "StepContext",
    "RESULT_FILE",
    "builtin_recipes",
    "find_recipe",
    "load_recipe",
    "run_recipe",
]
