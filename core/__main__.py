"""``python -m unlearn`` (and ``torchrun -m unlearn run ...``): starts the command-line application.
This entry module is the one place the ``unlearn`` package names an application."""

from unlearn.cli import main

main()
