"""The hooks a plugin may implement. This file, CONTRIBUTING.md and one example plugin are all a
method author needs to read.

A plugin is a module (or object) with functions decorated by ``@hookimpl`` whose names match the
specs below. It is found through the ``unlearn`` entry-point group, e.g. in its pyproject::

    [project.entry-points.unlearn]
    ga = "unlearn_plugin_ga"

Every plugin first registers what it provides in ``register_methods``. When a run is composed
(``unlearn run --method gd --with lora``) the core calls the other hooks *only* on the plugins
that registered the chosen names, and passes that name as ``method`` so one package may provide
several entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pluggy

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel

    from .data import Encoded
    from .losses import LossContext, LossOutput
    from .run import RunContext

hookspec = pluggy.HookspecMarker("unlearn")
hookimpl = pluggy.HookimplMarker("unlearn")


@hookspec
def register_methods(register: Callable[..., None]) -> None:
    """Register the entries this plugin provides.

    Call ``register(name, config=ConfigModel, kind="loss", summary="...", uses_retain=True)``
    once per entry. ``kind`` is ``"loss"`` (chosen with ``--method``), ``"parameters"`` or
    ``"post-process"`` (chosen with ``--with``). ``config`` is a pydantic model whose fields
    have defaults from the paper; it must forbid unknown keys. The host validates names and
    rejects duplicates across plugins.
    """


@hookspec(firstresult=True)
def compute_loss(method: str, config: BaseModel, ctx: LossContext) -> torch.Tensor | LossOutput:
    """Return the loss of one training step for the loss method ``method``.

    ``ctx.batch`` is ``{"forget": ..., "retain": ...}`` (each with ``input_ids``,
    ``attention_mask``, ``labels`` where the prompt is masked with -100, ``index`` and ``task``). Use the
    helpers on ``ctx`` (``nll``, ``token_logprobs``, ``reference_token_logprobs``, ...) rather
    than calling the model yourself, so forward passes and reference log-probs are shared and
    cached. Return a scalar tensor, or ``LossOutput(loss, logs)`` to log extra terms.
    """


@hookspec(firstresult=True)
def schedule(
    method: str, config: BaseModel, forget: Sequence[Encoded], retain: Sequence[Encoded] | None, seed: int, batch_size: int
) -> list[dict[str, tuple[int, Encoded]]] | None:
    """Give the exact order of training items instead of the core's shuffled forget/retain pairs.

    Return a list of items, each ``{"forget": (row, example)}``, ``{"retain": (row, example)}``
    or both, where ``row`` is the example's position in ``forget``/``retain``. Items are batched
    in order, ``batch_size`` at a time, and every item of one batch must hold the same splits
    (e.g. sequential chunks, or alternating forget and retain batches). ``trainer.epochs``
    counts passes over the list. Return None to keep the default pairing.
    """


@hookspec
def select_parameters(
    method: str, config: BaseModel, model: torch.nn.Module, run: RunContext
) -> torch.nn.Module | None:
    """Choose what trains, before training starts.

    Either set ``requires_grad`` on ``model``'s parameters in place and return None (see
    ``unlearn.params.train_only``), or return a wrapped model (e.g. a LoRA ``PeftModel``) that
    the trainer uses instead. Called for the loss method and every ``--with`` entry, in the
    order given, each on the previous one's result. A wrapper that keeps the input weights
    frozen inside it should call ``run.reference.share(wrapped, switch_off)`` so the reference
    model is the same network with the addition switched off, not a second copy.
    """


@hookspec
def post_process(method: str, config: BaseModel, output_dir: Path, run: RunContext) -> None:
    """Write the finished model into ``output_dir``, a staging folder that becomes the output
    only when every hook has returned. Leave a loadable safetensors checkpoint behind.

    ``run.inputs`` are the models to work on and ``run.base_model`` is the input model. In a
    run (``--with``), called once on the main process after ``save_pretrained``: ``inputs`` is
    ``[output_dir]``, the model just trained, to rewrite in place (merge an adapter, prune,
    convert). In a recipe's ``[[post]]`` step, ``inputs`` are the finished models the step
    names and ``output_dir`` starts empty (e.g. a TIES merge of two runs).
    """
