"""One registry for every pluggable kind: image and tabular encoders, fusions, datasets, suites, metrics, protocols.

Design (after timm's ``_registry.py`` and lm-eval's ``api/registry.py``):

* a builder registers under a name with a decorator (``@register_fusion("amf")``) or lazily as a
  ``"module:attr"`` string, so ``bench list`` never imports torch-heavy modules it does not need;
* third-party packages register through entry points (groups ``bench.fusions``,
  ``bench.tabular_encoders``, ``bench.image_encoders``, ``bench.datasets``, ``bench.suites``,
  ``bench.metrics``, ``bench.protocols``);
  built-ins win a name clash, with a logged warning; a plug-in that fails to import is reported
  by name and does not break the rest;
* lookups of unknown names raise :class:`~bench.errors.UnknownNameError` with close matches.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from bench.errors import PluginError, UnknownNameError

log = logging.getLogger(__name__)

KINDS = ("image_encoder", "tabular_encoder", "fusion", "dataset", "suite", "metric", "protocol")
ENTRY_POINT_GROUPS = {
    "image_encoder": "bench.image_encoders",
    "tabular_encoder": "bench.tabular_encoders",
    "fusion": "bench.fusions",
    "dataset": "bench.datasets",
    "suite": "bench.suites",
    "metric": "bench.metrics",
    "protocol": "bench.protocols",
}


@dataclass
class Entry:
    name: str
    kind: str
    target: Any  # the object, or a "module:attr" string resolved on first use
    origin: str = "builtin"  # "builtin" or the distribution / module that registered it
    summary: str = ""

    def load(self) -> Any:
        if isinstance(self.target, str) and self.kind != "suite":  # suites are YAML paths
            module_name, _, attr = self.target.partition(":")
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.target = obj
        return self.target


@dataclass
class Registry:
    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, name: str, target: Any, *, origin: str = "builtin", summary: str = "") -> None:
        if not name or not name.replace("-", "_").replace(".", "_").isidentifier():
            raise ValueError(f"invalid {self.kind} name {name!r}: use letters, digits, '-', '_' or '.'")
        old = self.entries.get(name)
        if old is not None and old.target is not target:
            if old.origin == "builtin" and origin != "builtin":
                log.warning("%s %r from %s ignored: the built-in of that name wins", self.kind, name, origin)
                return
            log.warning("%s %r re-registered by %s (was %s)", self.kind, name, origin, old.origin)
        self.entries[name] = Entry(name, self.kind, target, origin, summary)

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self.entries)
        if pattern:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def get(self, name: str) -> Any:
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownNameError(self.kind, name, difflib.get_close_matches(name, self.entries, n=3, cutoff=0.5))
        try:
            return entry.load()
        except Exception as exc:
            if entry.origin == "builtin":
                raise
            # a third-party module that fails to import: reported by name, one line, never a traceback
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
            plugin_errors[f"{ENTRY_POINT_GROUPS.get(self.kind, self.kind)}:{name}"] = error
            raise PluginError(
                f"{self.kind} {name!r} from {entry.origin} ({entry.target}) failed to import: {error}; "
                f"fix or uninstall {entry.origin}"
            ) from exc

    def entry(self, name: str) -> Entry:
        self.get(name)
        return self.entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self.entries


_REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}
_loaded: set[str] = set()  # kinds whose built-ins and entry points are registered
plugin_errors: dict[str, str] = {}


def registry(kind: str) -> Registry:
    """The registry of one kind, with built-ins and entry-point plug-ins loaded."""
    if kind not in _REGISTRIES:
        raise UnknownNameError("kind", kind, difflib.get_close_matches(kind, KINDS, n=3, cutoff=0.4))
    _ensure_loaded(kind)
    return _REGISTRIES[kind]


def _decorator(kind: str, name: str | None, summary: str | None) -> Callable[[Any], Any]:
    def wrap(obj: Any) -> Any:
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        module = getattr(obj, "__module__", "") or ""
        origin = "builtin" if module.startswith(("baselines", "bench")) else module.split(".")[0]
        _REGISTRIES[kind].add(name or obj.__name__, obj, origin=origin, summary=summary or (doc[0] if doc else ""))
        return obj

    return wrap


def register_image_encoder(name: str | None = None, *, summary: str | None = None):
    return _decorator("image_encoder", name, summary)


def register_tabular_encoder(name: str | None = None, *, summary: str | None = None):
    return _decorator("tabular_encoder", name, summary)


def register_fusion(name: str | None = None, *, summary: str | None = None):
    return _decorator("fusion", name, summary)


def register_dataset(name: str | None = None, *, summary: str | None = None):
    return _decorator("dataset", name, summary)


def register_metric(name: str | None = None, *, tasks: tuple[str, ...] | list[str], higher_is_better: bool = True,
                    percent: bool = False, label: str | None = None, summary: str | None = None):
    """Register ``fn(y_true, logits) -> float`` as a test metric suites can name (``metrics: [name]``).

    ``tasks``: ``binary`` (logits ``[N]``) and/or ``multiclass`` (logits ``[N, C]``); ``higher_is_better``
    is the direction every table states; ``percent``: a fraction shown x100. The metric is computed from
    the stored test predictions when a leaderboard is rendered, so naming it re-scores finished runs
    (:class:`bench.metrics.Metric`; ``bench check-plugin NAME --kind metric`` checks it)."""

    def wrap(fn: Callable) -> Any:
        from bench.metrics import Metric

        doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
        metric = Metric(name or fn.__name__, fn, tuple(tasks), bool(higher_is_better), bool(percent),
                        label or name or fn.__name__)
        module = getattr(fn, "__module__", "") or ""
        origin = "builtin" if module.startswith(("baselines", "bench")) else module.split(".")[0]
        _REGISTRIES["metric"].add(metric.name, metric, origin=origin, summary=summary or (doc[0] if doc else ""))
        return fn

    return wrap


def register_protocol(name: str | None = None, *, summary: str | None = None):
    """Register a :class:`bench.protocols.Protocol` subclass under the name suites use in ``protocols:``."""
    return _decorator("protocol", name, summary)


def register_suite(name: str, path: str, *, origin: str = "builtin", summary: str = "") -> None:
    """Suites are YAML files; third parties may register extra ones by path."""
    _REGISTRIES["suite"].add(name, path, origin=origin, summary=summary)


def _iter_entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    try:
        return metadata.entry_points(group=group)
    except Exception:  # pragma: no cover - broken metadata should not break bench
        return ()


def _dist_summary(ep: metadata.EntryPoint) -> str:
    """The plug-in's one-line description, from its distribution's metadata (no import needed)."""
    try:
        return (ep.dist.metadata.get("Summary") or "") if getattr(ep, "dist", None) else ""
    except Exception:  # pragma: no cover - unreadable metadata only costs the summary
        return ""


def _ensure_loaded(kind: str) -> None:
    """Register the built-ins of ``kind`` (metrics import neither torch nor the models), then its entry points."""
    if kind in _loaded:
        return
    _loaded.add(kind)
    if kind == "metric":
        import baselines.metrics  # noqa: F401  (registers the built-in metrics)
    elif kind == "protocol":
        import bench.protocols  # noqa: F401  (registers the built-in protocols)
    elif not _loaded - {"metric", "protocol", kind}:  # the first model-side kind asked for: import those built-ins once
        import baselines.fusion  # noqa: F401  (registers the built-ins through the public decorators)
        import baselines.image  # noqa: F401
        import baselines.tabular  # noqa: F401
        import bench.data  # noqa: F401  (dataset adapters)
        from bench.suites import register_builtin_suites

        register_builtin_suites()
    group = ENTRY_POINT_GROUPS[kind]
    for ep in _iter_entry_points(group):
        origin = ep.dist.name if getattr(ep, "dist", None) else ep.value.split(":")[0]
        try:
            if kind == "suite":
                target = ep.load()
                path = target() if callable(target) else target
                register_suite(ep.name, str(path), origin=origin)
            else:
                # Lazy: the plug-in is imported when first used; import errors surface then,
                # but a module that cannot even be found is reported now.
                module_name = ep.value.split(":")[0]
                if importlib.util.find_spec(module_name) is None:
                    raise ImportError(f"module {module_name!r} not found")
                _REGISTRIES[kind].add(ep.name, ep.value, origin=origin, summary=_dist_summary(ep))
        except Exception as exc:  # a broken plug-in is reported by name, never fatal
            plugin_errors[f"{group}:{ep.name}"] = f"{type(exc).__name__}: {exc}"
            log.warning("plug-in %s (%s) failed to load: %s", ep.name, group, exc)


def list_names(kind: str, pattern: str | None = None) -> list[str]:
    return registry(kind).names(pattern)


def get(kind: str, name: str) -> Any:
    return registry(kind).get(name)
