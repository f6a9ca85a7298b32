"""General utility through EleutherAI's lm-evaluation-harness (``lm-eval``), the library
open-unlearning and most papers report utility with: ``--utility lm-eval:TASK[,TASK]``.

The loaded model object is handed to ``lm_eval.simple_evaluate`` (wrapped in its ``HFLM``; no
second load). A task is a registered lm-eval task name or the path of a task YAML file (its
folder is added to lm-eval's task search path), so a task over local files (``dataset_path:
json`` with ``data_files``) runs offline. Each task's headline number is the first metric of its
``metric_list``; the utility is their mean.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from unlearn import ConfigError, DataError

PREFIX = "lm-eval:"


def is_lm_eval(utility: Path | str | None) -> bool:
    return utility is not None and str(utility).startswith(PREFIX)


def parse(spec: str) -> tuple[list[str], list[str]]:
    """``(task names, include paths)`` of ``lm-eval:TASK[,TASK]``; a TASK ending in ``.yaml`` is
    a local task file, read for its ``task`` name."""
    import yaml

    tasks, include = [], []
    for item in filter(None, (i.strip() for i in spec[len(PREFIX) :].split(","))):
        if item.endswith((".yaml", ".yml")):
            path = Path(item)
            try:
                config = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise DataError(f"{path}: not a readable lm-eval task YAML ({exc})") from None
            if not isinstance(config, dict) or not isinstance(config.get("task"), str):
                raise DataError(f"{path}: field 'task' is missing (an lm-eval task YAML names its task)")
            tasks.append(config["task"])
            include.append(str(path.resolve().parent))
        else:
            tasks.append(item)
    if not tasks:
        raise ConfigError(f"--utility {spec!r}: name at least one lm-eval task, e.g. lm-eval:mmlu")
    return tasks, sorted(set(include))


def check(spec: str) -> None:
    """Fail before any generation when lm-eval is missing or the spec is malformed."""
    parse(spec)
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError(f"--utility {spec}: needs lm-eval (pip install 'unlearn-core[lm-eval]')") from None


def lm_eval_utility(model: Any, tokenizer: Any, spec: str, batch_size: int = 16) -> dict[str, Any]:
    """Run the tasks on the loaded ``model``; ``{"value", "source", "tasks": {task: {metric, value}}}``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks, include = parse(spec)
    device = next(model.parameters()).device
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    manager = TaskManager(include_path=include or None)
    try:
        found = lm_eval.simple_evaluate(
            model=lm, tasks=tasks, task_manager=manager, log_samples=False, bootstrap_iters=0, verbosity="ERROR"
        )
    except Exception as exc:  # noqa: BLE001 - lm-eval raises many kinds for unknown tasks and bad data
        raise DataError(f"--utility {spec}: lm-eval failed ({type(exc).__name__}: {str(exc)[:300]})") from None
    per_task = {}
    for task in tasks:
        metric = found["configs"][task]["metric_list"][0]["metric"]
        results = found["results"][task]
        value = next(v for k, v in results.items() if k.split(",")[0] == metric)
        per_task[task] = {"metric": metric, "value": float(value)}
    shown = ", ".join(f"{t} {m['metric']}" for t, m in per_task.items())
    return {
        "value": statistics.fmean(m["value"] for m in per_task.values()),
        "source": f"lm-eval ({shown}): {spec[len(PREFIX) :]}",
        "tasks": per_task,
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
    }
