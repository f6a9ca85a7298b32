"""The hooks a plugin may implement. This file, CONTRIBUTING.md and one example plugin are all a
method author needs to read.

A plugin is a module (or object) with functions decorated by ``@hookimpl`` whose names match the
specs below. It is found through the ``unlearn`` entry-point group, e.g. in its pyproject::

    [project.entry-points.unlearn]
    ga = "unlearn_plugin_ga"

A method plugin first registers what it provides in ``register_methods``: its *methods*, each of
one kind (a loss, a parameter selection, a post-processing step). When a run is composed
(``unlearn run --method gd --with lora``) the core calls the other method hooks *only* on the
plugins that registered the chosen methods, and passes the method's name as ``method`` so one
package may provide several. A *benchmark* plugin registers benchmark objects in
``register_benchmarks`` instead (see :class:`Benchmark`), an *attack* plugin attack objects in
``register_attacks`` (see :class:`Attack`). ``register_commands`` is called on every plugin: built-in
applications (the evaluator, organiser mode, the embedded benchmark) add their commands with it
exactly as a third party does.

Hooks marked *first result* stop at the first implementation that returns something other than
None and return that answer; the others are called on each chosen plugin in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pluggy

if TYPE_CHECKING:
    import torch
    import typer

    from .attacks import AttackContext, Attacked
    from .config import Config
    from .context import LossContext, PostContext, RunContext
    from .data import Encoded
    from .losses import LossOutput

hookspec = pluggy.HookspecMarker("unlearn")
hookimpl = pluggy.HookimplMarker("unlearn")

Kind = Literal["loss", "parameters", "post-process"]
"""A method's kind: ``loss`` is chosen with ``--method``; ``parameters`` and ``post-process``
with ``--with``."""

Item = dict[str, tuple[int, "Encoded"]]
"""One training item of ``schedule``: ``{"forget": (row, example)}``, ``{"retain": ...}`` or both."""


class Register(Protocol):
    """The ``register`` callable that ``register_methods`` receives."""

    def __call__(
        self,
        name: str,
        *,
        config: type[Config],
        kind: Kind = "loss",
        summary: str = "",
        uses_retain: bool = True,
        alternate: Literal["refusal", "rewrite"] | None = None,
        alternates_per_row: int = 1,
    ) -> None:
        """Announce one method.

        :param name: lower-case letters, digits, ``-`` and ``_``; unique across installed plugins.
        :param config: a subclass of ``unlearn.Config`` (unknown keys are errors) whose fields have
            the paper's defaults; it arrives validated as ``config`` in every other hook.
        :param kind: ``"loss"``, ``"parameters"`` or ``"post-process"``.
        :param summary: one line for ``unlearn plugins``; the skeleton's placeholder fails
            ``unlearn plugins check``.
        :param uses_retain: whether a loss needs retain rows. True: the run refuses to start
            without a retain set and every forget example in a batch is paired with a retain
            example (``ctx.batch["retain"]``). False: retain rows are neither loaded nor batched.
        :param alternate: a loss that learns an alternate answer in place of the forgotten one
            names the kind it wants: ``"refusal"`` ("I don't know") or ``"rewrite"`` (the answer
            with its facts replaced). Every forget example in a batch then comes with one of its
            alternates, ``ctx.batch["alternate"]``: the same prompt with the alternate as answer.
            Where they come from (the rows' own ``alternate`` field, a refusal file, a rewrite) is
            the run's ``alternate`` settings (``unlearn.engine.AlternateSettings``).
        :param alternates_per_row: the paper's number of alternates per forget row (AltPO: 5);
            each (row, alternate) pair is one training item. The run's ``alternate.per_row``
            overrides it.
        """


@hookspec
def register_methods(register: Register) -> None:
    """Register the methods this plugin provides, once each, by calling ``register``.

    :param register: see :class:`Register`; the host validates names and configs and rejects a
        name another plugin already registered.
    """


SignalFn = Callable[["torch.nn.Module", bool], dict[str, float]]
"""What ``Benchmark.signals`` returns: ``fn(model, full)`` -> signal values of the model as it is
now; ``full`` asks also for the generation-based ones (``score``)."""

Direction = Literal["higher", "lower", "zero"]
"""Which way a headline number is better: ``zero`` means nearest 0 (e.g. MUSE's PrivLeak)."""


class Benchmark(Protocol):
    """What ``register_benchmarks`` registers: one benchmark (a data layout, its synthetic
    generator, how to evaluate a model on it and how to aggregate). Every application (``unlearn
    evaluate``, organiser mode, ``unlearn tune``, the methods table) asks the benchmark what it
    offers through what is written here, and nothing else; ``unlearn plugins check NAME`` checks it.

    ``name`` (as for methods), ``summary`` (one line) and ``headline`` (the numbers a table shows,
    each with its :data:`Direction`, e.g. ``{"forget_quality": "higher"}``; the first is what
    entrants are ranked by) are attributes. Every results file a benchmark writes is
    ``evaluation_results.json`` holding ``"benchmark": name`` and each headline key at the top level
    (absent or None without its input), so organiser mode, the methods table and a third party read
    any benchmark alike; a ``summary.md`` beside it, if written, is what ``unlearn evaluate`` prints.
    Outputs are written atomically (``unlearn.check_output``, a staging folder, ``unlearn.publish``),
    never into an input. The optional attributes below default to what a benchmark without them gets.
    """

    name: str
    summary: str
    headline: dict[str, Direction]
    # Optional (default None): the headline number ("higher" is better) that measures what
    # unlearning must keep, e.g. TOFU's ``model_utility``. Organiser mode and ``unlearn tune``'s
    # held-out check gate on it: an entrant is ranked only when it keeps at least the competition's
    # ``gate`` fraction of the target's.
    utility: str | None
    # Optional (default False): True when ``evaluate``'s ``data`` is a folder of the core's rows
    # (``forget.jsonl``, ``retain.jsonl``): organiser mode then scores entrants on the competition's
    # private rows. False: on the benchmark's own data folder (the competition's ``data``).
    evaluates_rows: bool
    # Optional (default ()): ``evaluate`` options a competition must give (LUME: ``mia``, the
    # documents whose attack is part of its final score).
    required: tuple[str, ...]
    # Optional (default: each headline key as itself): the leaderboard's columns, column name ->
    # results key, in order; the first is the rank (in its key's headline direction).
    columns: dict[str, str]
    # Optional: ``unlearn tune``'s default objective (maximised unless it is a ``lower`` headline
    # number) and constraints, as expressions of the benchmark's ``signals``. Default: the first
    # headline number, in its direction, and the ``utility`` number at least 0.75 x its initial value.
    objective: str
    constraints: tuple[str, ...]
    # Optional (default: each headline number but ``utility``): the numbers that show what a model
    # still knows of the forget set, name -> results key (a dotted path reaches into nested
    # results, e.g. ``forget-set.overall-knowledge-score``). ``unlearn attack``'s recovery is
    # measured on them.
    knowledge: dict[str, str]

    def synthesize(self, out: Path, seed: int, size: str) -> dict[str, int]:
        """Write the embedded default in this benchmark's layout into the new folder ``out``:
        deterministic for ``seed``; ``size`` is ``tiny`` (tests), ``small`` (minutes on CPU) or
        ``medium``. The folder also holds ``forget.jsonl`` and ``retain.jsonl`` in the core's row
        layout (``id``, ``input``, ``output``, ``task``): what a target memorises and a method
        unlearns. Returns rows per file written."""

    def evaluate(self, model: Path, data: Path, out: Path, **options: Any) -> dict[str, Any]:
        """Evaluate the model folder ``model`` on the benchmark folder ``data`` into the new folder
        ``out``; returns the results written (an empty dict on the non-main ranks of a launcher).
        ``options`` are keyword arguments the signature names, each with its default: from those
        ``unlearn evaluate`` offers (``reference``, ``device``, ``dtype``, ``batch_size``,
        ``max_new_tokens``, ``split``, ...) and ``progress`` (bars; organiser mode passes False).
        Applications pass only the options a benchmark names, and refuse one a user gave that it
        does not (naming the benchmarks that take it)."""

    def rescore(self, folder: Path, data: Path, out: Path, **options: Any) -> dict[str, Any]:
        """Recompute the results from the per-example files of an earlier evaluation in
        ``folder`` (this benchmark's own layout, ours or the benchmark authors'), with no model;
        ``options`` as for ``evaluate``."""

    # Optional: a benchmark that gives training signals lets runs evaluate while they train.
    def signals(self, data: Path, split: str, tokenizer: Any, rows: int) -> tuple[set[str], SignalFn]:
        """Prepare the signals of a model being trained (``trainer.eval_steps``): read ``split``
        (``validation`` or ``train``) of the folder ``data``, at most ``rows`` rows per file, and
        return the names of the signals and ``fn(model, full)``, which computes them for the model
        as it is (in eval mode, without gradients; under several ranks every rank calls it) and,
        with ``full``, the generation-based ones too. The names are what ``trainer.stop_when`` and
        ``trainer.best_by`` may use. A benchmark without it gives no signals."""


@hookspec
def register_benchmarks(register: Callable[[Benchmark], None]) -> None:
    """Register this plugin's benchmarks, once each, by calling ``register(benchmark)``.

    :param register: takes one :class:`Benchmark`; the host checks its name, summary, headline and
        methods and rejects a name another plugin already registered. ``unlearn evaluate
        --benchmark NAME`` and ``unlearn data synth --benchmark NAME`` then reach it.
    """


class Attack(Protocol):
    """What ``register_attacks`` registers: one way of trying to bring forgotten knowledge back
    (relearning a few rows, quantizing the weights, rephrasing the queries, ...). An attack only
    makes variants; the benchmark's own ``evaluate`` scores each, so every attack works on every
    benchmark, and ``unlearn attack`` compares the scores with the unattacked model's and the
    target's (the recovery).

    ``name`` (as for methods), ``summary`` (one line) and ``config`` (a subclass of ``unlearn.Config``
    holding the attack's settings, each with its default) are attributes.
    """

    name: str
    summary: str
    config: type[Config]

    def run(self, model: Path, data: Path, config: Config, ctx: AttackContext) -> list[Attacked]:
        """Attack the model folder ``model`` (only read) on the benchmark folder ``data`` (it holds
        the forget and retain rows in the core's row layout: ``unlearn.resolve_split(data,
        "forget")`` finds the file, ``forget.jsonl`` or the public ``forget_train.jsonl``) and return the
        variants to score, in order, each written under ``ctx.work``. An attack that cannot apply
        here (no paraphrases in this benchmark, no GPU for bitsandbytes) raises an
        ``unlearn.RunError`` saying why: the attack is reported as skipped with that line."""


@hookspec
def register_attacks(register: Callable[[Attack], None]) -> None:
    """Register this plugin's attacks, once each, by calling ``register(attack)``.

    :param register: takes one :class:`Attack`; the host checks its name, summary, config and
        ``run`` and rejects a name another plugin already registered. ``unlearn attack --attacks
        NAME`` then reaches it.
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands to the ``unlearn`` command line.

    :param cli: the root ``typer.Typer``. ``@cli.command()`` adds a command;
        ``unlearn.command_group(cli, "data", "help")`` returns a group, created on first use, that
        several plugins can add commands to. Import heavy modules inside the command, so that
        ``unlearn --help`` stays fast.
    """


def command_group(cli: typer.Typer, name: str, help: str = "") -> typer.Typer:
    """The sub-command group ``name`` of ``cli``, created on first use, so that several plugins
    can add commands to one group (``unlearn data ...``, ``unlearn plugins ...``)."""
    import typer

    for group in cli.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    sub = typer.Typer(help=help, no_args_is_help=True)
    cli.add_typer(sub, name=name)
    return sub


@hookspec(firstresult=True)
def compute_loss(method: str, config: Config, ctx: LossContext) -> torch.Tensor | LossOutput:
    """Return the loss of one training step. First result: one plugin answers.

    :param method: the chosen loss method's name (one plugin may register several).
    :param config: that method's validated config.
    :param ctx: the step: ``ctx.batch`` (``{"forget": ..., "retain": ...}``, plus ``"alternate"``
        for a method registered with ``alternate``; each split with
        ``input_ids``, ``attention_mask`` [B, T], ``labels`` [B, T] where prompt and padding are
        -100, ``index`` [B] and ``task``) and helpers that share forward passes and cache
        reference log-probs; shapes and averaging are documented on ``LossContext``.
    :returns: a scalar tensor, or ``LossOutput(loss, logs)`` to log extra terms beside it. Add
        retain-side terms last with ``LossOutput.add_term`` and return that object: under
        ``trainer.backward = "per-term"`` each term's new forward pass first backpropagates
        what was built before it.
    """


@hookspec(firstresult=True)
def schedule(
    method: str, config: Config, forget: Sequence[Encoded], retain: Sequence[Encoded] | None, seed: int, batch_size: int
) -> list[Item] | None:
    """Give the exact order of training items instead of the core's shuffled forget/retain pairs.
    First result: return None to keep the default pairing.

    :param method: the chosen loss method's name.
    :param config: that method's validated config.
    :param forget: the tokenised forget rows, in file order.
    :param retain: the tokenised retain rows, or None when the method does not use them.
    :param seed: the run's seed; the same seed must give the same order.
    :param batch_size: items per batch (``trainer.batch_size``). Items are batched in order and
        every item of one batch must hold the same splits (e.g. sequential chunks, or
        alternating forget and retain batches). ``trainer.epochs`` counts passes over the list.
    :returns: a list of items, each ``{"forget": (row, example)}``, ``{"retain": (row, example)}``
        or both, where ``row`` is the example's position in ``forget``/``retain``.
    """


@hookspec
def select_parameters(method: str, config: Config, model: torch.nn.Module, run: RunContext) -> torch.nn.Module | None:
    """Choose what trains, before training starts. Called for the loss method and every
    ``--with`` method, in the order given, each on the previous one's result.

    :param method: the method's name.
    :param config: its validated config.
    :param model: the model to train (possibly already wrapped by an earlier method).
    :param run: the run; ``run.reference`` is the frozen input model. A wrapper that keeps the
        input weights frozen inside it calls ``run.reference.share(wrapped, switch_off)`` so the
        reference is that network with the addition switched off, not a second copy.
    :returns: None after setting ``requires_grad`` in place (see ``unlearn.train_only``), or a
        wrapped model (e.g. a LoRA ``PeftModel``) that the trainer uses instead.
    """


@hookspec
def post_process(method: str, config: Config, output_dir: Path, run: PostContext) -> None:
    """Write the finished model into ``output_dir``, a staging folder that becomes the output
    only when every hook has returned; leave a loadable safetensors checkpoint behind.

    :param method: the method's name.
    :param config: its validated config.
    :param output_dir: in a run (``--with``), the model just saved, to rewrite in place (merge an
        adapter, prune, convert); in a recipe's ``[[post]]`` step, an empty folder.
    :param run: ``run.inputs`` are the models to work on (``[output_dir]`` in a run; the models
        of the steps a recipe step names, e.g. two runs to TIES-merge), ``run.base_model`` is the
        input model. Called once, on the main process.
    """
