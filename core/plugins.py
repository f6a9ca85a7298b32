"""Finding, loading and calling plugins.

Every entry point of the ``unlearn`` group is loaded inside its own ``try``: a plugin that fails
to import or registers nonsense is reported (``unlearn plugins``) and skipped, and never breaks
the CLI. ``UNLEARN_STRICT_PLUGINS=1`` raises instead; ``UNLEARN_LOAD_PLUGINS=a,b`` loads only
the named entry points; ``UNLEARN_TRACE_HOOKS=1`` prints every hook call.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

import pluggy
from pydantic import BaseModel

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "unlearn"
Kind = Literal["loss", "parameters", "post-process"]
KINDS: tuple[str, ...] = ("loss", "parameters", "post-process")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Entry:
    """One registered method (``kind="loss"``), parameter selector or post-processor."""

    name: str
    kind: Kind
    config: type[BaseModel]
    summary: str
    uses_retain: bool
    plugin: str


@dataclass
class PluginInfo:
    """What ``unlearn plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "error"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """A pluggy manager plus the entries its plugins registered."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager("unlearn")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.entries: dict[str, Entry] = {}
        self._callers: dict[tuple[str, str], Any] = {}
        if _env_flag("UNLEARN_TRACE_HOOKS"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
        if load_entry_points:
            self.load_entry_points()

    # -- loading ------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        only = {n.strip() for n in os.environ.get("UNLEARN_LOAD_PLUGINS", "").split(",") if n.strip()}
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if only and ep.name not in only:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )
            try:
                self._add(ep.load(), info)
            except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported
                self._fail(info, exc)

    def register(self, plugin: object, name: str) -> PluginInfo:
        """Register an in-process plugin (a module or object with hookimpls), e.g. in a test."""
        info = PluginInfo(name=name)
        try:
            self._add(plugin, info)
        except Exception as exc:  # noqa: BLE001
            self._fail(info, exc)
        return info

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.plugins.pop(name, None)
        self.entries = {k: e for k, e in self.entries.items() if e.plugin != name}
        self._callers = {k: c for k, c in self._callers.items() if k[1] != name}

    def _fail(self, info: PluginInfo, exc: Exception) -> None:
        if self.pm.get_plugin(info.name) is not None:
            self.pm.unregister(name=info.name)
        self.entries = {k: e for k, e in self.entries.items() if e.plugin != info.name}
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        info.error = last
        self.plugins[info.name] = info
        if _env_flag("UNLEARN_STRICT_PLUGINS"):
            raise PluginError(f"plugin {info.name!r} failed to load: {last}") from exc

    def _add(self, plugin: object, info: PluginInfo) -> None:
        if info.name in self.plugins:
            raise PluginError(f"a plugin named {info.name!r} is already loaded")
        self.plugins[info.name] = info
        self.pm.register(plugin, name=info.name)  # validates hookimpl signatures
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        unknown = [h for h in info.hooks if not getattr(self.pm.hook, h).has_spec()]
        if unknown:
            raise PluginError(f"implements unknown hook(s) {unknown}; see unlearn/hookspecs.py")
        for impl in self.pm.hook.register_methods.get_hookimpls():
            if impl.plugin_name == info.name:
                impl.function(register=lambda *a, **k: self._register_entry(info, *a, **k))
        if not info.entries:
            raise PluginError("registers no method (implement register_methods)")

    def _register_entry(
        self,
        info: PluginInfo,
        name: str,
        *,
        config: type[BaseModel],
        kind: Kind = "loss",
        summary: str = "",
        uses_retain: bool = True,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(f"entry name {name!r} must match {_NAME.pattern}")
        if kind not in KINDS:
            raise PluginError(f"entry {name!r}: kind {kind!r} is not one of {KINDS}")
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"entry {name!r}: config must be a pydantic BaseModel subclass")
        if config.model_config.get("extra") != "forbid":
            raise PluginError(
                f"entry {name!r}: config {config.__name__} must set "
                "model_config = ConfigDict(extra='forbid') so typos are errors"
            )
        if name in self.entries:
            raise PluginError(f"entry {name!r} is already registered by plugin {self.entries[name].plugin!r}")
        self.entries[name] = Entry(name, kind, config, summary, uses_retain, info.name)
        info.entries.append(name)

    # -- lookup and calls ---------------------------------------------------------------------
    def entry(self, name: str, kinds: tuple[str, ...] = KINDS) -> Entry:
        """The entry called ``name``, of one of ``kinds``; a clear error otherwise."""
        entry = self.entries.get(name)
        if entry is None:
            broken = self.plugins.get(name)
            if broken is not None and broken.error:
                raise PluginError(f"plugin {name!r} is installed but failed to load: {broken.error}")
            known = ", ".join(sorted(e.name for e in self.entries.values() if e.kind in kinds)) or "none"
            raise PluginError(
                f"no plugin provides {name!r} (installed {'/'.join(kinds)} entries: {known}); "
                f"try `unlearn plugins --available` and `unlearn install {name}`"
            )
        if entry.kind not in kinds:
            raise PluginError(f"{name!r} is a {entry.kind} entry; expected {' or '.join(kinds)}")
        return entry

    def call(self, hook: str, entry: Entry, **kwargs: Any) -> Any:
        """Call ``hook`` on the one plugin that registered ``entry`` and on no other; its answer."""
        key = (hook, entry.plugin)
        caller = self._callers.get(key)
        if caller is None:
            others = [p for p in self.pm.get_plugins() if self.pm.get_name(p) != entry.plugin]
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
            self._callers[key] = caller
        result = caller(method=entry.name, **kwargs)
        if getattr(self.pm.hook, hook).spec.opts.get("firstresult"):
            return result
        # Not firstresult: pluggy returns a list, but one plugin was called, so at most one answer.
        return next((r for r in result if r is not None), None)

    def implements(self, hook: str, entry: Entry) -> bool:
        return hook in self.plugins[entry.plugin].hooks


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide host, loading entry points on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST
