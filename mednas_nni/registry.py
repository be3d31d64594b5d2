"""Plugin discovery through Python entry points (built-ins included).

Five kinds, one entry-point group each: ``mednas_nni.datasets``, ``mednas_nni.tasks``,
``mednas_nni.search_spaces``, ``mednas_nni.strategies``, ``mednas_nni.exporters``. A third-party package adds a table to its own
``pyproject.toml``::

    [project.entry-points."mednas_nni.strategies"]
    my_search = "my_pkg.search:MySearch"

and, once installed, ``mednas list`` shows it and configs can name it. Discovery reads metadata only;
a plugin's module is imported when it is asked for (or listed), so a broken optional plugin never
breaks an unrelated run (xarray/pluggy behaviour). For tests and notebooks, :func:`register` adds a
plugin object directly.
"""
from __future__ import annotations

import functools
import importlib.metadata as md
import logging
import warnings
from dataclasses import dataclass
from typing import Any

from .errors import PluginLoadError, PluginNotFoundError, did_you_mean

__all__ = ["KINDS", "PluginInfo", "list_plugins", "get_plugin", "register", "unregister", "clear_cache"]

_logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("datasets", "tasks", "search_spaces", "strategies", "exporters")
_SINGULAR = {"search_spaces": "search space", "strategies": "strategy", "exporters": "exporter", "datasets": "dataset",
             "tasks": "task"}
_KIND_ALIASES = {"space": "search_spaces", "search_space": "search_spaces", "strategy": "strategies",
                 "exporter": "exporters", "dataset": "datasets", "data": "datasets", "task": "tasks"}


@dataclass
class PluginInfo:
    """What ``mednas list`` shows for one plugin."""

    kind: str
    name: str
    target: str            # "module:attr" or a repr for plugins registered in code
    origin: str            # distribution that provides it ("mednas-nni", "my-plugins", or "<registered>")
    summary: str = ""
    status: str = "ok"     # "ok" | "failed" | "not loaded"
    error: str = ""


_manual: dict[str, dict[str, tuple[Any, str]]] = {k: {} for k in KINDS}
_loaded: dict[tuple[str, str], Any] = {}


def _kind(kind: str) -> str:
    k = _KIND_ALIASES.get(kind, kind)
    if k not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {', '.join(KINDS)}")
    return k


@functools.lru_cache(maxsize=None)
def _entry_points(kind: str) -> dict[str, tuple[md.EntryPoint, str]]:
    """name -> (entry point, distribution name); duplicates warn and name both origins."""
    found: dict[str, tuple[md.EntryPoint, str]] = {}
    for ep in md.entry_points(group=f"mednas_nni.{kind}"):
        dist = ep.dist.name if getattr(ep, "dist", None) is not None else "?"
        if ep.name in found:
            prev_ep, prev_dist = found[ep.name]
            if prev_ep.value == ep.value:
                continue  # the same distribution seen twice on sys.path (editable installs do this)
            warnings.warn(
                f"{_SINGULAR[kind]} plugin '{ep.name}' is provided twice: by {prev_dist} ({prev_ep.value}) and by "
                f"{dist} ({ep.value}); using the one from {dist}", stacklevel=3)
        found[ep.name] = (ep, dist)
    return found


def clear_cache() -> None:
    """Forget discovered entry points and loaded plugins (after installing a plugin in-process)."""
    _entry_points.cache_clear()
    _loaded.clear()


def register(kind: str, name: str, obj: Any, origin: str = "<registered>") -> None:
    """Register a plugin object in code (tests, notebooks). It wins over an entry point of the same name."""
    kind = _kind(kind)
    if name in _manual[kind]:
        warnings.warn(f"{_SINGULAR[kind]} plugin '{name}' re-registered; the new one replaces "
                      f"{_manual[kind][name][0]!r}", stacklevel=2)
    _manual[kind][name] = (obj, origin)


def unregister(kind: str, name: str) -> None:
    _manual[_kind(kind)].pop(name, None)


def _names(kind: str) -> list[str]:
    return sorted(set(_entry_points(kind)) | set(_manual[kind]))


def _load(kind: str, name: str) -> Any:
    if name in _manual[kind]:
        return _manual[kind][name][0]
    key = (kind, name)
    if key not in _loaded:
        ep, dist = _entry_points(kind)[name]
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - any import failure of a plugin is reported, not raised raw
            raise PluginLoadError(
                f"{_SINGULAR[kind]} plugin '{name}' ({ep.value}, from {dist}) failed to load: "
                f"{type(e).__name__}: {e}") from e
        declared = getattr(obj, "name", name)
        if isinstance(declared, str) and declared != name:
            _logger.warning("%s plugin entry point '%s' points to a class whose name is '%s'", kind, name, declared)
        _loaded[key] = obj
    return _loaded[key]


def get_plugin(kind: str, name_or_cls: Any) -> Any:
    """Return the plugin class for a name (or pass a class straight through, as xarray does).

    Raises:
        PluginNotFoundError: no plugin of that kind has that name (with a did-you-mean and the installed names).
        PluginLoadError: the plugin exists but failed to import.
    """
    kind = _kind(kind)
    if not isinstance(name_or_cls, str):
        return name_or_cls
    names = _names(kind)
    if name_or_cls not in names:
        raise PluginNotFoundError(
            f"unknown {_SINGULAR[kind]} '{name_or_cls}'{did_you_mean(name_or_cls, names)} "
            f"installed: {', '.join(names) or '(none)'}")
    return _load(kind, name_or_cls)


def _summary(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    for line in doc.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def list_plugins(kind: str | None = None, load: bool = True) -> list[PluginInfo]:
    """Every installed plugin, by kind and name. With ``load=True`` each is imported to get its summary;
    one that fails is listed with ``status='failed'`` and the reason, and the others are unaffected."""
    kinds = KINDS if kind is None else (_kind(kind),)
    out: list[PluginInfo] = []
    for k in kinds:
        eps = _entry_points(k)
        for name in _names(k):
            if name in _manual[k]:
                obj, origin = _manual[k][name]
                out.append(PluginInfo(k, name, repr(obj), origin, _summary(obj)))
                continue
            ep, dist = eps[name]
            info = PluginInfo(k, name, ep.value, dist, status="not loaded")
            if load:
                try:
                    info.summary = _summary(_load(k, name))
                    info.status = "ok"
                except PluginLoadError as e:
                    info.status, info.error = "failed", str(e.__cause__ or e)
            out.append(info)
    return out
