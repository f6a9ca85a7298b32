"""A tune worker process: ``python -m unlearn.tune.worker OUT`` (started by `unlearn tune`)."""

import sys

from unlearn.tune.study import worker

if __name__ == "__main__":
    worker(sys.argv[1])
