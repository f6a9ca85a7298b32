"""unlearn: a plugin-based registry and runner for LLM unlearning methods.

Plugin authors need ``from unlearn import hookimpl`` and ``unlearn/hookspecs.py``.
"""

from importlib.metadata import PackageNotFoundError, version

from .hookspecs import hookimpl
from .losses import LossContext, LossOutput

try:
    __version__ = version("unlearn-core")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["hookimpl", "LossContext", "LossOutput", "__version__"]
