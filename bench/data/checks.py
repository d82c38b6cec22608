"""Data checks run before training: ``bench check-data``, ``bench run --dataset``, ``bench check-plugin --kind dataset``.

Every problem is one line naming rows or columns and the fix. Errors (the data cannot be used as
is): missing or unreadable image files, NaN labels, a single class, a patient in two splits,
duplicate rows, unknown split values, text in a numeric column, an empty split. Warnings: constant
columns and a feature that alone predicts the label almost perfectly on the training split (a
likely leak, e.g. a column derived from the outcome).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.data.base import SPLITS, MultimodalData
from bench.errors import DataError

LEAK_SCORE = 0.99  # single-feature training AUC / balanced accuracy above which a feature looks like a leak


@dataclass(frozen=True)
class Issue:
    level: str  # "error" | "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def rows_text(rows: Sequence[int], name: Callable[[int], str], limit: int = 5) -> str:
    """``line 3, line 7, ... and 4 more`` for the first ``limit`` rows."""
    rows = [int(r) for r in rows]
    shown = ", ".join(name(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


# ------------------------------------------------------------------------------------ feature checks
def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def _single_feature_score(x: np.ndarray, y: np.ndarray, task: str, categorical: bool) -> float:
    """How well one feature alone separates the training labels (1 = perfectly)."""
    if categorical:
        pred = np.empty_like(y)
        for level in np.unique(x):
            rows = x == level
            pred[rows] = np.bincount(y[rows]).argmax()
        return _balanced_accuracy(y, pred)
    ok = ~np.isnan(x)
    x, y = x[ok], y[ok]
    if len(np.unique(y)) < 2 or len(x) < 10:
        return 0.0
    if task == "binary":
        from sklearn.metrics import roc_auc_score

        auc = roc_auc_score(y, x)
        return max(auc, 1 - auc)
    from sklearn.tree import DecisionTreeClassifier

    n_classes = len(np.unique(y))
    tree = DecisionTreeClassifier(max_leaf_nodes=max(2 * n_classes, 4), min_samples_leaf=max(2, len(y) // 100),
                                  random_state=0).fit(x[:, None], y)
    return _balanced_accuracy(y, tree.predict(x[:, None]))


def feature_warnings(x_num, x_cat, num_names, cat_names, y, train, task) -> list[str]:
    """Likely leaks: features that alone predict the training labels almost perfectly."""
    out = []
    train = np.asarray(train)
    if len(train) < 20 or len(np.unique(y[train])) < 2:
        return out
    yt = np.asarray(y)[train]
    columns = [(n, np.asarray(x_num[train, j], dtype=np.float64), False) for j, n in enumerate(num_names)]
    columns += [(n, np.asarray(x_cat[train, j]), True) for j, n in enumerate(cat_names)]
    for name, x, categorical in columns:
        if categorical and len(np.unique(x)) > len(train) / 5:  # identifier-like: a perfect fit by construction
            continue
        score = _single_feature_score(x, yt, task, categorical)
        if score >= LEAK_SCORE:
            how = "AUC" if task == "binary" and not categorical else "balanced accuracy"
            out.append(f"feature {name!r} alone predicts the label almost perfectly on the training split "
                       f"({how} {score:.3f}); a likely leak (a column derived from the outcome?): check it, "
                       "or list it under drop:")
    return out


def check_loaded(data: MultimodalData) -> list[Issue]:
    """The checks that apply to any adapter's MultimodalData (no file names: rows are sample indices)."""
    issues: list[Issue] = []
    err = lambda m: issues.append(Issue("error", m))  # noqa: E731
    y = np.asarray(data.y)
    ids = np.asarray(data.ids) if data.ids is not None else np.arange(data.n).astype(str)
    name = lambda i: f"sample {i} (id {ids[i]})"  # noqa: E731
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            err(f"{len(bad)} labels are NaN: {rows_text(bad, name)}; drop or fix those samples")
            return issues
    y = y.astype(np.int64)
    out_of_range = np.flatnonzero((y < 0) | (y >= data.n_classes))
    if len(out_of_range):
        err(f"{len(out_of_range)} labels are outside [0, {data.n_classes}): {rows_text(out_of_range, name)}; "
            "labels must be class indices")
    if len(np.unique(y)) < 2:
        err(f"every label is {y[0] if len(y) else '-'}: a single class; a classifier needs two or more")
    unknown = np.flatnonzero(~np.isin(np.asarray(data.split).astype(str), SPLITS))
    if len(unknown):
        err(f"{len(unknown)} samples have a split outside train/val/test: {rows_text(unknown, name)}; fix the adapter")
    for s in SPLITS:
        rows = np.flatnonzero(np.asarray(data.split) == s)
        if not len(rows):
            err(f"the {s} split is empty; every split needs samples")
        elif data.task == "binary" and len(np.unique(y[rows])) < 2:
            err(f"the {s} split holds a single class; AUC needs both classes in every split")
    if data.ids is not None:
        per: dict[str, set] = {}
        for i, s in zip(ids, np.asarray(data.split)):
            per.setdefault(str(i), set()).add(str(s))
        leaks = [i for i, s in per.items() if len(s) > 1]
        if leaks:
            err(f"ids in more than one split (leakage): {', '.join(leaks[:5])}{' ...' if len(leaks) > 5 else ''}; "
                "keep each patient in one split")
    x_num = np.asarray(data.x_num, dtype=np.float64)
    inf = np.isinf(x_num).any(axis=0)
    for j in np.flatnonzero(inf):
        err(f"numeric feature {data.num_names[j]!r} holds infinite values; use NaN for missing values")
    for j, c in enumerate(data.num_names):
        col = x_num[:, j]
        if len(np.unique(col[~np.isnan(col)])) <= 1:
            issues.append(Issue("warning", f"feature {c!r} is constant; it carries no information"))
    for j, c in enumerate(data.cat_names):
        if len(np.unique(data.x_cat[:, j])) <= 1:
            issues.append(Issue("warning", f"feature {c!r} is constant; it carries no information"))
    if not issues or all(i.level == "warning" for i in issues):
        train = data.indices("train")
        issues += [Issue("warning", m) for m in feature_warnings(
            data.x_num, data.x_cat, data.num_names, data.cat_names, y, train, data.task)]
    return issues


# ------------------------------------------------------------------------------------ summary
def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def format_summary(scan) -> str:
    """The check-data summary of a table scan: splits x classes, features, missingness, images."""
    spec, n = scan.spec, scan.n
    lines = [f"dataset {spec.name!r} ({spec.path}): {n} rows in {spec.table.name}"]
    if scan.y is not None:
        lines.append(f"label {spec.label!r}: {scan.task}, classes {', '.join(scan.class_names)}")
    if scan.split is not None and scan.y is not None:
        lines.append(f"split: {scan.split_note}")
        width = max(8, *(len(c) for c in scan.class_names)) if scan.class_names else 8
        lines.append(f"  {'split':<6} {'n':>6}  " + "  ".join(f"{c:>{width}}" for c in scan.class_names))
        for s in SPLITS:
            rows = scan.split == s
            counts = [int(((scan.y == k) & rows).sum()) for k in range(len(scan.class_names))]
            lines.append(f"  {s:<6} {int(rows.sum()):>6}  " + "  ".join(f"{c:>{width}}" for c in counts))
    if scan.feats is not None:
        types = scan.feats["types"]
        by_type = Counter(types.values())
        lines.append(f"features: {len(scan.feats['num_names']) + len(scan.feats['cat_names'])} used ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())) + ")")
        df = scan.df
        wide = max([8] + [len(c) for c in types])
        lines.append(f"  {'column':<{wide}}  {'type':<12}  missing")
        for c, t in types.items():
            miss = int(df[c].isna().sum()) if c in df.columns else 0
            lines.append(f"  {c:<{wide}}  {t:<12}  {_pct(miss, n)}")
    infos = scan.image_info
    if infos:
        empty = sum(info is None for info in infos)
        found = sum(bool(info) and "shape" in info for info in infos)
        missing = sum(bool(info) and bool(info.get("missing_file")) for info in infos)
        unreadable = sum(bool(info) and "error" in info and not info.get("missing_file") for info in infos)
        lines.append(f"images (column {spec.image!r}): {found} read, {empty} cells empty (image missing, {_pct(empty, n)}), "
                     f"{missing} files not found, {unreadable} unreadable")
        sizes = Counter(f"{i['shape'][0]}x{i['shape'][1]}" for i in infos if i and "shape" in i)
        modes = Counter(i["mode"] for i in infos if i and "shape" in i)
        if sizes:
            top = ", ".join(f"{k} ({v})" for k, v in sizes.most_common(5))
            lines.append(f"  sizes: {top}{' ...' if len(sizes) > 5 else ''}")
            lines.append("  modes: " + ", ".join(f"{k} ({v})" for k, v in modes.most_common())
                         + f" -> {scan.channels} channel{'s' if scan.channels > 1 else ''} (in_chans)")
    return "\n".join(lines)


def check_data_file(path, cache_dir=None, out=print) -> int:
    """``bench check-data``: print the summary and every problem; 2 when there is an error, else 0."""
    from bench.data.table import scan_table

    scan = scan_table(path, cache_dir=cache_dir)
    out(format_summary(scan))
    for issue in scan.issues:
        out(str(issue))
    errors, warnings = len(scan.errors), len(scan.warnings)
    verdict = "not usable: fix the errors above" if errors else "usable"
    out(f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}: {verdict}")
    return 2 if errors else 0


# ------------------------------------------------------------------------------------ bench run
def load_checked(dataset: str, *, root=None, options: dict | None = None, say=print) -> MultimodalData:
    """``bench run --dataset``: a dataset YAML or a registered dataset, checked before it runs."""
    from bench.data.table import build_data, is_table_config, scan_table
    from bench.registry import get

    options = dict(options or {})
    if is_table_config(dataset):
        scan = scan_table(dataset, cache_dir=options.get("cache_dir"))
        for issue in scan.warnings:
            say(f"[bench] {issue}")
        data = build_data(scan, image_size=int(options.get("image_size", 64)), cache_dir=options.get("cache_dir"))
    else:
        data = get("dataset", dataset)(root=root, seed=0, **options)
        if not isinstance(data, MultimodalData):
            raise DataError(f"dataset {dataset!r} returned {type(data).__name__}, not MultimodalData; "
                            "fix the adapter (check it with `python -m bench check-plugin DATASET --kind dataset`)")
        issues = check_loaded(data)
        for issue in issues:
            if issue.level == "warning":
                say(f"[bench] {issue}")
        errors = [i for i in issues if i.level == "error"]
        if errors:
            raise DataError(f"dataset {dataset!r}: {len(errors)} problem(s), first: {errors[0].message}")
    if data.image_available is not None:
        say(f"[bench] {data.provenance.dataset}: {int((~data.image_available).sum())} of {data.n} samples have no image "
            "(real missingness: fusions receive image_available=False for them)")
    return data


# ------------------------------------------------------------------------------------ check-plugin
def check_dataset_plugin(name: str, root=None, image_size: int = 32):
    """The dataset conformance checks (``bench check-plugin NAME --kind dataset``) as CheckResults."""
    from bench.conformance import CheckResult
    from bench.registry import registry

    results = []
    t0 = time.perf_counter()

    def add(check, ok, msg=""):
        nonlocal t0
        results.append(CheckResult(check, bool(ok), msg, seconds=time.perf_counter() - t0))
        t0 = time.perf_counter()
        return ok

    try:
        loader = registry("dataset").get(name)
    except Exception as exc:
        add("load", False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return results
    if not add("load", callable(loader), "" if callable(loader) else f"{type(loader).__name__} is not callable"):
        return results
    import inspect

    try:
        params = inspect.signature(loader).parameters
        kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        missing = [k for k in ("root", "image_size") if k not in params] if not kw else []
        add("signature", not missing, f"add keyword argument(s) {missing} (or **options)" if missing else "")
    except (TypeError, ValueError):
        add("signature", True, "signature not inspectable")
    try:
        data = loader(root=root, image_size=image_size, seed=0, n=200)
    except DataError as exc:
        add("returns", False, f"{exc} (pass --data-root DIR)")
        return results
    except Exception as exc:
        add("returns", False, f"raised {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; "
                              "bad data must raise bench.errors.DataError with a one-line message")
        return results
    ok = isinstance(data, MultimodalData)
    if not add("returns", ok, f"{data.n} samples, {data.task}, {data.n_classes} classes" if ok
               else f"returned {type(data).__name__}, expected MultimodalData"):
        return results
    img = np.asarray(data.images[: min(64, data.n)])
    shape_ok = img.ndim == 4 and img.shape[1] in (1, 3) and img.shape[2:] == (image_size, image_size)
    ok = shape_ok and img.dtype == np.float32 and np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    add("images", ok, f"{img.dtype} {tuple(data.images.shape)}" + ("" if ok else
        f": expected float32 [n, 1 or 3, {image_size}, {image_size}] in [0, 1], finite"))
    cat_ok = data.x_cat.dtype == np.int64 and all(
        (data.x_cat[:, j] >= 0).all() and (data.x_cat[:, j] < c).all() for j, c in enumerate(data.cat_cardinalities))
    add("features", data.x_num.dtype == np.float32 and cat_ok,
        "" if data.x_num.dtype == np.float32 and cat_ok else
        "x_num must be float32 (NaN = missing); x_cat int64 codes in [0, cardinality)")
    prov = data.provenance
    prov_ok = bool(prov.dataset) and prov.source in ("real", "synthetic") and bool(prov.checksum)
    add("provenance", prov_ok, "" if prov_ok else "provenance needs a dataset name, source real|synthetic and a checksum")
    issues = check_loaded(data)
    errors = [i for i in issues if i.level == "error"]
    add("data", not errors, errors[0].message if errors else f"{data.n} samples, {len([i for i in issues if i.level == 'warning'])} warnings")
    try:
        again = loader(root=root, image_size=image_size, seed=0, n=200)
        add("deterministic", again.provenance.checksum == prov.checksum and np.array_equal(again.y, data.y)
            and np.array_equal(np.asarray(again.split), np.asarray(data.split)),
            "" if again.provenance.checksum == prov.checksum else "two loads differ: the checksum or split changed")
    except Exception as exc:  # pragma: no cover - it loaded once
        add("deterministic", False, f"second load raised {type(exc).__name__}")
    return results
