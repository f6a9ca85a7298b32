"""The plugin host: finding, loading and calling plugins.

Every entry point of the ``unlearn`` group is loaded inside its own ``try``: a plugin that fails
to import or registers nonsense is reported (``unlearn plugins``) and skipped, and never breaks
the CLI. ``UNLEARN_STRICT_PLUGINS=1`` raises instead; ``UNLEARN_LOAD_PLUGINS=a,b`` loads only
the named entry points (the built-in applications of ``unlearn-core`` are always loaded);
``UNLEARN_TRACE_HOOKS=1`` prints every hook call.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points, version
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel, ValidationError

from unlearn import hookspecs
from unlearn.config import Config
from unlearn.errors import ConfigError, PluginError
from unlearn.hookspecs import Attack, Benchmark, Direction, Kind

from .settings import describe_error

if TYPE_CHECKING:
    import typer

    from .settings import RunConfig

ENTRY_POINT_GROUP = "unlearn"
BUILTIN_DISTRIBUTION = "unlearn-core"
KINDS: tuple[Kind, ...] = ("loss", "parameters", "post-process")
DIRECTIONS: tuple[Direction, ...] = ("higher", "lower", "zero")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_METHOD_HOOKS = ("compute_loss", "schedule", "select_parameters", "post_process")


@dataclass(frozen=True)
class Method:
    """One registered method: a loss (``kind="loss"``), a parameter selection or a post-processing step."""

    name: str
    kind: Kind
    config: type[Config]
    summary: str
    uses_retain: bool
    plugin: str
    alternate: str | None = None  # "refusal" or "rewrite": the loss learns an alternate answer
    alternates_per_row: int = 1


@dataclass
class PluginInfo:
    """What ``unlearn plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    attacks: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "error"

    @property
    def builtin(self) -> bool:
        """Shipped with the core (the evaluator, organiser mode, the benchmark tools)."""
        return self.distribution == BUILTIN_DISTRIBUTION


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """A pluggy manager plus the methods its plugins registered."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager("unlearn")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.methods: dict[str, Method] = {}
        self.benchmarks: dict[str, tuple[str, Benchmark]] = {}  # name -> (plugin, benchmark)
        self.attacks: dict[str, tuple[str, Attack]] = {}  # name -> (plugin, attack)
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
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name, distribution=dist.name if dist else None, version=dist.version if dist else None
            )
            if only and ep.name not in only and not info.builtin:
                continue
            taken = self.plugins.get(ep.name)
            if taken is not None:  # two distributions claim one name: keep the one that works, report the other
                loser, winner = (info, taken) if taken.error is None else (taken, info)
                clash = f"the name {ep.name!r} is also taken by {winner.distribution}; uninstall one of them"
                loser.name, loser.error = (
                    f"{ep.name} ({loser.distribution})",
                    f"{clash} ({loser.error or 'not loaded'})",
                )
                self.plugins[loser.name] = self.plugins.pop(ep.name) if loser is taken else loser
                if loser is info:
                    continue
            try:
                _check_core_range(dist)
                self._add(ep.load(), info)
            except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported
                self._fail(info, exc)
        for name in sorted(only - set(self.plugins)):
            self.plugins[name] = PluginInfo(
                name, error="UNLEARN_LOAD_PLUGINS names it, but no such plugin is installed"
            )

    def register(self, plugin: object, name: str) -> PluginInfo:
        """Register an in-process plugin (a module or object with hookimpls), e.g. in a test."""
        info = PluginInfo(name=name)
        try:
            self._add(plugin, info)
        except Exception as exc:  # noqa: BLE001
            self._fail(info, exc)
        return info

    def _fail(self, info: PluginInfo, exc: Exception) -> None:
        if self.pm.get_plugin(info.name) is not None:
            self.pm.unregister(name=info.name)
        self.methods = {k: m for k, m in self.methods.items() if m.plugin != info.name}
        self.benchmarks = {k: b for k, b in self.benchmarks.items() if b[0] != info.name}
        self.attacks = {k: a for k, a in self.attacks.items() if a[0] != info.name}
        self._callers = {k: c for k, c in self._callers.items() if k[1] != info.name}
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
        self._callers.clear()  # a subset caller excludes only the plugins known when it was made
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        unknown = [h for h in info.hooks if not getattr(self.pm.hook, h).has_spec()]
        if unknown:
            raise PluginError(f"implements unknown hook(s) {unknown}; see core/hookspecs.py (unlearn.hookspecs)")
        if not info.hooks:
            raise PluginError("implements no hook (see core/hookspecs.py (unlearn.hookspecs))")
        if "register_methods" in info.hooks:
            self._only("register_methods", info.name)(register=lambda *a, **k: self._register_method(info, *a, **k))
            if not info.methods:
                raise PluginError("register_methods registered nothing")
        elif any(h in info.hooks for h in _METHOD_HOOKS):
            raise PluginError("implements method hooks but registers no method (implement register_methods)")
        if "register_benchmarks" in info.hooks:
            self._only("register_benchmarks", info.name)(register=lambda b: self._register_benchmark(info, b))
            if not info.benchmarks:
                raise PluginError("register_benchmarks registered nothing")
        if "register_attacks" in info.hooks:
            self._only("register_attacks", info.name)(register=lambda a: self._register_attack(info, a))
            if not info.attacks:
                raise PluginError("register_attacks registered nothing")

    def _register_benchmark(self, info: PluginInfo, benchmark: Benchmark) -> None:
        name = getattr(benchmark, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(f"benchmark name {name!r} must match {_NAME.pattern}")
        missing = [a for a in ("synthesize", "evaluate", "rescore") if not callable(getattr(benchmark, a, None))]
        headline = getattr(benchmark, "headline", None)
        if missing or not isinstance(getattr(benchmark, "summary", None), str):
            raise PluginError(f"benchmark {name!r} lacks {missing or ['summary']} (see unlearn.hookspecs.Benchmark)")
        if not isinstance(headline, dict) or not headline or set(headline.values()) - set(DIRECTIONS):
            raise PluginError(f"benchmark {name!r}: headline must map each number to one of {DIRECTIONS}")
        utility = getattr(benchmark, "utility", None)
        if utility is not None and headline.get(utility) != "higher":
            raise PluginError(f"benchmark {name!r}: utility {utility!r} must be a headline number that is 'higher'")
        keys = [k for k in (getattr(benchmark, "columns", None) or {}).values() if k not in headline]
        if keys:
            raise PluginError(f"benchmark {name!r}: columns must name headline numbers; {keys[0]!r} is not one")
        if name in self.benchmarks:
            raise PluginError(f"benchmark {name!r} is already registered by plugin {self.benchmarks[name][0]!r}")
        self.benchmarks[name] = (info.name, benchmark)
        info.benchmarks.append(name)

    def _register_attack(self, info: PluginInfo, attack: Attack) -> None:
        name = getattr(attack, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(f"attack name {name!r} must match {_NAME.pattern}")
        if not callable(getattr(attack, "run", None)) or not isinstance(getattr(attack, "summary", None), str):
            raise PluginError(f"attack {name!r} lacks run or summary (see unlearn.hookspecs.Attack)")
        _check_config(f"attack {name!r}", getattr(attack, "config", None))
        if name in self.attacks:
            raise PluginError(f"attack {name!r} is already registered by plugin {self.attacks[name][0]!r}")
        self.attacks[name] = (info.name, attack)
        info.attacks.append(name)

    def _register_method(
        self,
        info: PluginInfo,
        name: str,
        *,
        config: type[Config],
        kind: Kind = "loss",
        summary: str = "",
        uses_retain: bool = True,
        alternate: str | None = None,
        alternates_per_row: int = 1,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(f"method name {name!r} must match {_NAME.pattern}")
        if kind not in KINDS:
            raise PluginError(f"method {name!r}: kind {kind!r} is not one of {KINDS}")
        _check_config(f"method {name!r}", config)
        if alternate not in (None, "refusal", "rewrite") or not (
            isinstance(alternates_per_row, int) and alternates_per_row >= 1
        ):
            raise PluginError(
                f"method {name!r}: alternate must be None, 'refusal' or 'rewrite', alternates_per_row >= 1"
            )
        if name in self.methods:
            owner = self.plugins[self.methods[name].plugin]
            raise PluginError(
                f"method {name!r} is already registered by plugin {owner.name!r} ({owner.distribution or 'in-process'})"
            )
        self.methods[name] = Method(name, kind, config, summary, uses_retain, info.name, alternate, alternates_per_row)
        info.methods.append(name)

    def _only(self, hook: str, plugin: str) -> Any:
        """A caller of ``hook`` that reaches the plugin called ``plugin`` and no other."""
        key = (hook, plugin)
        caller = self._callers.get(key)
        if caller is None:
            others = [p for p in self.pm.get_plugins() if self.pm.get_name(p) != plugin]
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
            self._callers[key] = caller
        return caller

    # -- lookup and calls ---------------------------------------------------------------------
    def method(self, name: str, kinds: tuple[Kind, ...] = KINDS) -> Method:
        """The method called ``name``, of one of ``kinds``; a clear error otherwise."""
        method = self.methods.get(name)
        if method is None:
            broken = self.plugins.get(name)
            if broken is not None and broken.error:
                raise PluginError(f"plugin {name!r} is installed but failed to load: {broken.error}")
            known = ", ".join(sorted(m.name for m in self.methods.values() if m.kind in kinds)) or "none"
            raise PluginError(
                f"no plugin provides {name!r} (installed {'/'.join(kinds)} methods: {known}); "
                f"try `unlearn plugins --available` and `unlearn install {name}`"
            )
        if method.kind not in kinds:
            raise PluginError(f"{name!r} is a {method.kind} method; expected {' or '.join(kinds)}")
        return method

    def benchmark(self, name: str) -> Benchmark:
        """The benchmark called ``name``; a clear error naming the installed ones otherwise."""
        if name not in self.benchmarks:
            known = ", ".join(sorted(self.benchmarks)) or "none"
            raise PluginError(f"no plugin provides the benchmark {name!r} (installed: {known})")
        return self.benchmarks[name][1]

    def attack(self, name: str) -> Attack:
        """The attack called ``name``; a clear error naming the installed ones otherwise."""
        if name not in self.attacks:
            known = ", ".join(sorted(self.attacks)) or "none"
            raise PluginError(f"no plugin provides the attack {name!r} (installed: {known}); try `unlearn plugins -a`")
        return self.attacks[name][1]

    def call(self, hook: str, method: Method, **kwargs: Any) -> Any:
        """Call ``hook`` on the one plugin that registered ``method`` and on no other; its answer."""
        result = self._only(hook, method.plugin)(method=method.name, **kwargs)
        if getattr(self.pm.hook, hook).spec.opts.get("firstresult"):
            return result
        # Not firstresult: pluggy returns a list, but one plugin was called, so at most one answer.
        return next((r for r in result if r is not None), None)

    def implements(self, hook: str, method: Method) -> bool:
        return hook in self.plugins[method.plugin].hooks

    def configure(self, config: RunConfig) -> dict[str, Config]:
        """Check the run's chosen methods and validate their settings; each method's config object.

        Fills every chosen method's defaults into ``config.config`` so the saved config is complete.
        """
        self.method(config.method, kinds=("loss",))
        for name in config.with_:
            self.method(name, kinds=("parameters", "post-process"))
        stray = sorted(set(config.config) - set(config.methods()))
        if stray:
            raise ConfigError(
                f"config.{stray[0]}: settings for a method that is not part of this run "
                f"(method {config.method!r}, with {config.with_})"
            )
        resolved: dict[str, Config] = {}
        for name in config.methods():
            try:
                resolved[name] = self.methods[name].config.model_validate(config.config.get(name, {}))
            except ValidationError as exc:
                raise ConfigError(describe_error(exc, prefix=f"config.{name}")) from None
        config.config = {name: cfg.model_dump(mode="json") for name, cfg in resolved.items()}
        return resolved

    def add_commands(self, cli: typer.Typer) -> None:
        """Let every plugin add its commands (``register_commands``); a failing plugin is reported."""
        for name, info in list(self.plugins.items()):
            if info.error is None and "register_commands" in info.hooks:
                try:
                    self._only("register_commands", name)(cli=cli)
                except Exception as exc:  # noqa: BLE001 - a broken plugin never breaks the CLI
                    self._fail(info, exc)


def _check_config(what: str, config: Any) -> None:
    """A method's or attack's config is a pydantic model that refuses unknown keys (so typos are errors)."""
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        raise PluginError(f"{what}: config must be a subclass of unlearn.Config")
    if config.model_config.get("extra") != "forbid":
        raise PluginError(f"{what}: config {config.__name__} must forbid unknown keys (subclass unlearn.Config)")


def _check_core_range(dist: Any) -> None:
    """A plugin declares the core versions it supports as its ``unlearn-core`` requirement; refuse it
    (before importing it) when the installed core is outside that range, e.g. after ``--no-deps``."""
    from packaging.requirements import Requirement

    core = version(BUILTIN_DISTRIBUTION)
    for line in (dist.requires or []) if dist is not None else []:
        req = Requirement(line)
        if req.name == BUILTIN_DISTRIBUTION and not req.marker and not req.specifier.contains(core, prereleases=True):
            raise PluginError(f"needs unlearn-core{req.specifier}, but {core} is installed; install a matching version")


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide host, loading entry points on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def host_loaded() -> bool:
    """Whether this process has its host already (plugins may have been registered in it)."""
    return _HOST is not None
