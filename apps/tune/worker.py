"""A tune worker process: ``python -m unlearn.tune.worker OUT`` (started by `unlearn tune`)."""

import sys

from unlearn.engine import UnlearnError
from unlearn.tune.study import WORKER_ERROR, worker

if __name__ == "__main__":
    try:
        worker(sys.argv[1])
    except UnlearnError as exc:  # one line the study reports as it is
        print(f"{WORKER_ERROR}{exc}", file=sys.stderr, flush=True)
        sys.exit(1)
