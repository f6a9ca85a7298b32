"""The errors the CLI turns into one clear message (no traceback)."""


class UnlearnError(Exception):
    """Base of every error that is the user's to fix; the message says where and what."""


class ConfigError(UnlearnError, ValueError):
    """A configuration file, flag or value is wrong; the message names the field."""


class DataError(UnlearnError, ValueError):
    """A data file is missing or malformed; the message names the file, the row and the field."""


class PluginError(UnlearnError):
    """A plugin could not be loaded, or a run asked for a method no plugin provides."""


class RunError(UnlearnError, RuntimeError):
    """A run cannot start or finish; the message says what to do."""


class NonFiniteLossError(UnlearnError, RuntimeError):
    """The loss became NaN or infinite; training stopped before anything was saved."""
