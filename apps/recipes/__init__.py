"""Recipes: whole unlearning systems (several runs plus post-processing steps over their outputs)
as one file, run end to end and resumably (``unlearn recipe run|list|show``). An application on
the core: it composes ``unlearn.engine.run`` and the ``post_process`` hook as a third party could."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn.engine import lazy_exports

# names load on first use (unlearn.engine.lazy_exports), so importing the package costs nothing
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            [
                "Recipe",
                "PostStep",
                "StepContext",
                "RESULT_FILE",
                "builtin_recipes",
                "find_recipe",
                "load_recipe",
                "run_recipe",
            ],
            ".recipe",
        )
    },
)

if TYPE_CHECKING:  # what type checkers and editors see
    from .recipe import (
        RESULT_FILE,
        PostStep,
        Recipe,
        StepContext,
        builtin_recipes,
        find_recipe,
        load_recipe,
        run_recipe,
    )
