"""Run a SemEval-2025 Task 4 style submission unchanged: a ``.py`` file that defines
``unlearn(input_model_path, output_dir, forget_dir, retain_dir)``, the function the organisers'
harness called (the task paper, arXiv:2504.02883, and the organisers' instructions). Each data
folder holds ``forget.jsonl`` (or ``retain.jsonl``) and the same rows as parquet, in the
organisers' columns ``id, input, output, task, split``. The submission's folder comes first on
``sys.path``, so it imports its own modules.

Run as a file, under any launcher and any entrant's Python: it imports only the standard library.

    python harness.py SUBMISSION.py MODEL_DIR OUTPUT_DIR FORGET_DIR RETAIN_DIR
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path

MARK = "unlearn harness: "  # the organiser reads lines starting with this as the run's reason


def run_submission(file: Path, model: str, output_dir: str, forget_dir: str, retain_dir: str) -> None:
    """Import ``file`` as a module and call its ``unlearn`` function with the four paths."""
    spec = importlib.util.spec_from_file_location("submission", file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{MARK}{file.name} cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["submission"] = module
    sys.path.insert(0, str(file.resolve().parent))  # the submission imports its own helper modules
    spec.loader.exec_module(module)
    function = getattr(module, "unlearn", None)
    if not callable(function):
        raise SystemExit(f"{MARK}no unlearn() in {file.name}")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    function(model, output_dir, forget_dir, retain_dir)


def release_process_group() -> None:
    """Destroy the process group a submission left open, as published submissions do. Without it
    gloo's threads are torn down at interpreter exit, and now and then a rank aborts there, after
    its model was saved ("terminate called without an active exception", SIGABRT: 3 runs in 20 of
    a two-rank DeepSpeed init and barrier on this machine, 0 in 30 with the group destroyed)."""
    dist = sys.modules.get("torch.distributed")  # only if the submission imported it: no import here
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    if len(sys.argv) != 6:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    run_submission(Path(sys.argv[1]), *sys.argv[2:])
    release_process_group()
    gc.freeze()  # the model is saved; skip the collector's pass over every object at exit


if __name__ == "__main__":
    main()
