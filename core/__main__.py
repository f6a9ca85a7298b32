"""``python -m unlearn`` (and ``torchrun -m unlearn run ...``)."""

from .cli import main

main()
