"""Run fingerprints: what produced a finished run, so that a changed input is never reused silently.

A run directory is named ``protocol__encoder__fusion__strategy__seed``; that name says nothing about
the budget, the data or the code. Its *fingerprint* does (stored in ``fingerprint.json`` and in
``report.json``):

* ``budget``: the budget's name and a hash of its resolved settings (overrides applied);
* ``dataset``: name, real or synthetic, version and checksum of the data it trained on;
* ``suite``: the suite's name, version and a hash of its definition (dataset, loss, protocols,
  imputations, image encoder, Rconf; not the lists of methods and seeds, which only pick runs);
* ``plugins``: for the image encoder, the tabular encoder, the fusion, the dataset adapter and (when a
  protocol ranks features) the importance model: registered name, distribution, version and a hash
  of the source (the plug-in's whole package; for modules inside bench, the defining module);
* ``bench``: the bench version.

Before a suite trains, :func:`reconcile` compares the fingerprint of every finished run of the plan
with the one it would be made with now; a run that differs is moved to ``<suite>/superseded/`` with
one line naming what changed, together with the saved searches of its method, and is run again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.results import RunSpec, is_done, run_dir, set_aside, stored_fingerprint

SUPERSEDED_DIR = "superseded"
#: budget keys that only pick runs (how many seeds), not how a run trains
_SELECTION_BUDGET_KEYS = ("seeds",)
#: suite keys that only pick runs or describe the suite
_SELECTION_SUITE_KEYS = ("tabular_encoders", "fusions", "strategies", "seeds", "description", "budgets",
                         "budget_overrides", "default_budget")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------- plug-in source
@functools.lru_cache(maxsize=256)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, _size, _mtime in files:  # the file's name, not where the checkout lies: a moved clone is the same code
        h.update(Path(path).name.encode() + b"\0")
        try:
            h.update(Path(path).read_bytes())
        except OSError:
            h.update(b"<unreadable>")
    return h.hexdigest()[:16]


def _source_files(module) -> list[Path]:
    """The files whose content defines ``module``'s behaviour: the whole top-level package of a
    plug-in; only the defining module for code inside bench (bench's own version covers the rest)."""
    file = getattr(module, "__file__", None)
    if not file:
        return []
    top = module.__name__.split(".")[0]
    top_mod = sys.modules.get(top)
    top_file = getattr(top_mod, "__file__", None)
    if top == "bench" or not top_file or Path(top_file).name != "__init__.py":
        return [Path(file)]
    root = Path(top_file).parent
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)[:5000]


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _distribution(module_name: str, origin: str) -> tuple[str | None, str | None]:
    if origin not in ("builtin", "", None) and "." not in origin and ":" not in origin:
        names = [origin]
    else:
        names = _packages_distributions().get(module_name.split(".")[0], [])
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def plugin_identity(kind: str, name: str) -> dict:
    """Registered name, distribution, version, module and source hash of one plug-in."""
    from bench.registry import registry

    entry = registry(kind).entry(name)
    obj = entry.target
    module = inspect.getmodule(obj)
    module_name = getattr(module, "__name__", str(entry.target))
    dist, version = _distribution(module_name, entry.origin)
    files = _source_files(module) if module is not None else []
    stats = []
    for p in files:
        try:
            st = p.stat()
            stats.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((str(p), -1, -1))
    return {"name": name, "distribution": dist, "version": version, "module": module_name,
            "source": _hash_files(tuple(stats)) if stats else None}


# ---------------------------------------------------------------------------------- fingerprints
class Fingerprints:
    """The fingerprint each run of a suite is made with now: ``Fingerprints(suite, prov)(spec)``."""

    def __init__(self, suite, prov: dict):
        from bench import __version__
        from bench.pipeline import needs_importance

        self.suite = suite
        budget = {k: v for k, v in suite.budget.items() if k not in _SELECTION_BUDGET_KEYS}
        definition = {k: v for k, v in suite.raw.items() if k not in _SELECTION_SUITE_KEYS}
        definition["protocols"] = suite.protocols
        ds = suite.dataset
        loader = ds["name"] if prov.get("source") == "real" or not ds.get("fallback") else ds["fallback"]
        shared = {"image_encoder": plugin_identity("image_encoder", suite.image_encoder.get("name", "timm")),
                  "dataset": plugin_identity("dataset", loader)}
        if needs_importance(suite):
            model = suite.budget.get("importance", {}).get("model", "resnet")
            shared["importance_model"] = plugin_identity("tabular_encoder", model)
        from bench.fast_paths import NUMERICS

        self.base = {
            "bench": __version__,
            "numerics": NUMERICS,
            "budget": {"name": suite.budget_name, "settings": _sha(budget)},
            "dataset": {k: prov.get(k) for k in ("dataset", "source", "version", "checksum")},
            "suite": {"name": suite.name, "version": suite.version, "definition": _sha(definition)},
        }
        self.shared = shared
        self._cache: dict[tuple[str, str], dict] = {}

    def __call__(self, spec: RunSpec) -> dict:
        from bench.imputation import parse_variant

        key = (spec.tabular_encoder, spec.fusion)
        if key not in self._cache:
            plugins = {**self.shared, "tabular_encoder": plugin_identity("tabular_encoder", spec.tabular_encoder),
                       "fusion": plugin_identity("fusion", parse_variant(spec.fusion)[0])}
            fp = {**self.base, "plugins": plugins}
            self._cache[key] = {"digest": _sha(fp), **fp}
        return self._cache[key]


_LAST: list = []  # (suite, provenance, Fingerprints) of the suite being run


def run_fingerprint(suite, prov: dict, spec: RunSpec) -> dict:
    """The fingerprint ``spec`` is made with now (one :class:`Fingerprints` per suite and dataset)."""
    if not _LAST or _LAST[0] is not suite or _LAST[1] != prov:
        _LAST[:] = [suite, dict(prov), Fingerprints(suite, prov)]
    return _LAST[2](spec)


def describe_change(old: dict, new: dict) -> str:
    """What differs between two fingerprints, in a few words (``old → new``)."""
    if not old.get("digest"):
        return "no stored fingerprint (made before bench recorded them)"
    out = []
    if old.get("bench") != new.get("bench"):
        out.append(f"bench version {old.get('bench')} → {new.get('bench')}")
    if old.get("numerics") != new.get("numerics"):
        out.append(f"harness numerics {old.get('numerics') or 'default CPU layout'} → {new.get('numerics')}")
    ob, nb = old.get("budget", {}), new.get("budget", {})
    if ob.get("name") != nb.get("name"):
        out.append(f"budget {ob.get('name')} → {nb.get('name')}")
    elif ob != nb:
        out.append(f"budget {nb.get('name')} settings edited")
    od, nd = old.get("dataset", {}), new.get("dataset", {})
    if od != nd:
        def ds(d):
            return f"{d.get('dataset')} ({d.get('source')}, checksum {d.get('checksum')})"
        out.append(f"dataset {ds(od)} → {ds(nd)}")
    os_, ns = old.get("suite", {}), new.get("suite", {})
    if os_ != ns:
        ver = f" v{os_.get('version')} → v{ns.get('version')}" if os_.get("version") != ns.get("version") else " edited"
        out.append(f"suite definition{ver}")
    op, np_ = old.get("plugins", {}), new.get("plugins", {})
    for role in sorted(set(op) | set(np_)):
        a, b = op.get(role, {}), np_.get(role, {})
        if a == b:
            continue
        who = f"{role.replace('_', ' ')} {b.get('name') or a.get('name')!r}"
        if a.get("name") != b.get("name"):
            out.append(f"{role.replace('_', ' ')} {a.get('name')!r} → {b.get('name')!r}")
        elif (a.get("distribution"), a.get("version")) != (b.get("distribution"), b.get("version")):
            out.append(f"{who} {a.get('distribution')} {a.get('version')} → {b.get('distribution')} {b.get('version')}")
        else:
            out.append(f"{who} source edited ({b.get('module')})")
    return "; ".join(out) or "a different fingerprint"


# ---------------------------------------------------------------------------------------- plan
def training_settings(suite) -> dict[str, bool]:
    """The suite's training settings (a run's ``protocol``) in pipeline order, each with whether it trains
    on complete data: a missingness protocol trained at rate 0 is the ``complete`` setting."""
    from bench.protocols import missingness_plan

    settings: dict[str, bool] = {}
    for spec in suite.protocols:
        plan = missingness_plan(spec)
        if plan is None:
            settings.setdefault(spec["name"], True)
        else:
            for p in plan.train_rates:
                settings.setdefault("complete" if p == 0 else plan.run_protocol(p), p == 0)
    return settings


def planned_specs(suite) -> list[RunSpec]:
    """Every run of this invocation's plan, in the order the pipeline runs them."""
    settings = training_settings(suite)
    image_label = suite.image_config().get("model_name", suite.image_encoder.get("name", "timm"))
    variants, _ = suite.fusion_variants()
    return [RunSpec(suite.name, st, image_label, tab, label, strategy, seed)
            for tab in suite.tabular_encoders for st in settings for label, _, _ in variants
            for strategy in suite.strategies for seed in suite.seeds]


def search_stem(suite, spec: RunSpec) -> str:
    """The name of the search a run's hyper-parameters come from (``<suite>/search/<stem>.json``): one per
    tabular encoder, method and strategy, and per protocol unless ``search.per_protocol`` is false, when
    the imputation variants of a fusion share their fusion's search."""
    from bench.imputation import parse_variant

    per_protocol = suite.budget.get("search", {}).get("per_protocol", True)
    method = spec.fusion if per_protocol else parse_variant(spec.fusion)[0]
    return "__".join((spec.tabular_encoder, method, spec.strategy, spec.protocol if per_protocol else "all"))


SEARCH_INDEX = "_fingerprints.json"


def reconcile(out: Path, suite, fingerprints: Callable[[RunSpec], dict], specs: list[RunSpec], *,
              force: bool = False, say: Callable[[str], None] = print) -> int:
    """Set aside every finished run of ``specs`` (and the saved search of its method) whose stored
    fingerprint differs from the one it would be made with now, one line per kind of change; they
    are run again. Returns how many runs were set aside. With ``force`` everything is redone anyway."""
    suite_dir = Path(out) / suite.name
    search_dir = suite_dir / "search"
    index_path = search_dir / SEARCH_INDEX
    try:
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        index = index if isinstance(index, dict) else {}
    except (OSError, ValueError):
        index = {}
    changes: Counter[str] = Counter()
    stale_stems: set[str] = set()
    moved = 0
    for sp in specs:
        new = fingerprints(sp)
        for stem in [search_stem(suite, sp)]:
            if stem in index and index[stem] != new["digest"]:
                stale_stems.add(stem)
            index[stem] = new["digest"]
        d = run_dir(out, sp)
        if force or not is_done(d):
            continue
        old = stored_fingerprint(d)
        if old.get("digest") == new["digest"]:
            continue
        changes[describe_change(old, new)] += 1
        set_aside(d, suite_dir / SUPERSEDED_DIR)
        stale_stems.add(search_stem(suite, sp))
        moved += 1
    for stem in sorted(stale_stems):
        f = search_dir / f"{stem}.json"
        if f.exists():
            set_aside(f, suite_dir / SUPERSEDED_DIR / "search")
    if stale_stems:
        _drop_studies(search_dir / "optuna.db", [f"{suite.name}__{s}__" for s in stale_stems])
    for what, n in changes.items():
        say(f"[bench] {n} finished run{'s' if n > 1 else ''} of {suite_dir} made with a different input ({what}): "
            f"moved to {suite_dir / SUPERSEDED_DIR}, running again (--force redoes every run)")
    if index:
        search_dir.mkdir(parents=True, exist_ok=True)
        from bench.results import atomic_write_json

        atomic_write_json(index_path, index)
    return moved


def _drop_studies(db: Path, prefixes: list[str]) -> None:
    """Delete the Optuna studies of superseded searches from the suite's default SQLite storage, so
    that the search runs again rather than resuming trials made with other inputs."""
    if not db.exists():
        return
    import optuna

    url = f"sqlite:///{db.resolve()}"
    try:
        for name in optuna.get_all_study_names(url):
            if name.startswith(tuple(prefixes)):
                optuna.delete_study(study_name=name, storage=url)
    except Exception as exc:  # noqa: BLE001 - an unreadable study database is reported, not fatal
        print(f"bench: warning: could not drop superseded searches from {db} ({type(exc).__name__}: {exc})",
              file=sys.stderr)
