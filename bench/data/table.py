"""Bring your own data: an image + table dataset described by a small YAML file.

The table (CSV, TSV or Parquet) has one row per sample; one column holds image paths (relative to
the table's folder; an empty cell = that sample's image is missing), one the label, optionally one
the split and one a patient id. Every other column is a feature, typed automatically
(:mod:`bench.data.tabular`). See ``datasets/table.md`` for the card and every key::

    name: my-cohort
    table: cohort.csv      # one row per sample (CSV, TSV or Parquet; relative to this YAML)
    label: outcome
    image: image_path      # paths relative to the table; empty = image missing
    id: patient_id         # optional: groups for splitting, leakage check
    split: split           # optional: train / val / test (else a stratified split grouped by id)

:func:`scan_table` reads and checks everything without building the image array (``bench
check-data``); :func:`load_table` (registered as the dataset ``table``) scans, refuses data with
errors, and returns :class:`~bench.data.base.MultimodalData` with images resized once to the
budget's resolution and cached by content key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench.data.base import SPLITS, MultimodalData, Provenance, cached_npy, default_cache_dir
from bench.data.checks import Issue, feature_warnings, rows_text
from bench.data.images import ImageOptions, ImageReadError, read_image, resize_batch, to_channels
from bench.data.tabular import normalize_splits, read_table, table_to_features
from bench.errors import DataError
from bench.registry import register_dataset

log = logging.getLogger(__name__)

CACHE_FORMAT = "table-images-v1"  # bump when image decoding or resizing changes
KEYS = {
    "name": "dataset name (letters, digits, '-', '_', '.'); shown on the leaderboard",
    "table": "CSV / TSV / Parquet file, relative to the YAML",
    "label": "label column",
    "image": "image-path column (paths relative to the table; empty = missing)",
    "id": "patient / group id column (optional)",
    "split": "split column with train / val / test (optional)",
    "task": "binary | multiclass (optional; inferred from the number of classes)",
    "positive": "the positive class of a binary label (optional; default the larger sorted value)",
    "features": "use only these feature columns (optional)",
    "drop": "columns that are not features (optional)",
    "categorical": "columns to type as categorical (optional)",
    "numeric": "columns to type as numeric (optional)",
    "window": "intensity window [lo, hi] (CT: HU) or {center, width}; default the DICOM's, else min-max",
    "ct_window": "alias of window",
    "slice": "slice of a 3-D volume: an index, 'middle', or a column holding each row's index",
    "slice_axis": "axis of the slice (default -1, the last)",
    "split_seed": "seed of the generated split (default 2022)",
    "split_fractions": "train / val / test fractions of the generated split (default [0.7, 0.15, 0.15])",
    "description": "free text",
}
MAX_LABEL_LEVELS = 50


@dataclass(frozen=True)
class TableSpec:
    """A parsed dataset YAML (paths resolved)."""

    path: Path
    name: str
    table: Path
    label: str
    image: str
    id: str | None = None
    split: str | None = None
    task: str | None = None
    positive: str | None = None
    features: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    window: tuple[float, float] | None = None
    slice: int | str | None = None
    slice_axis: int = -1
    split_seed: int = 2022
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    description: str = ""

    @property
    def slice_column(self) -> str | None:
        return self.slice if isinstance(self.slice, str) and self.slice != "middle" else None

    def settings(self) -> dict:
        """Everything that shapes the loaded data (for checksums and provenance), paths excluded."""
        d = asdict(self)
        d.pop("path"), d.pop("description")
        d["table"] = self.table.name
        return json.loads(json.dumps(d, default=str))


def is_table_config(value) -> bool:
    """Whether ``--dataset VALUE`` names a dataset YAML (rather than a registered dataset)."""
    s = str(value)
    return s.lower().endswith((".yaml", ".yml")) or os.sep in s or Path(s).is_file()


def read_spec(path) -> TableSpec:
    """Parse and validate a dataset YAML; a one-line DataError names the bad key and the fix."""
    path = Path(path).expanduser()
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"dataset file {str(path)!r} does not exist; pass the path of a dataset YAML (see datasets/table.md)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read dataset file {str(path)!r} ({type(exc).__name__}); pass a readable YAML file") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise DataError(f"dataset file {str(path)!r} is not valid YAML{f' (line {line + 1})' if line is not None else ''}; fix the syntax") from None
    if not isinstance(doc, dict):
        raise DataError(f"dataset file {str(path)!r} must be a YAML mapping with at least name, table, label and image")
    where = f"dataset file {path.name}"
    for key in doc:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            raise DataError(f"{where}: unknown key {key!r}{f' (did you mean {close[0]!r}?)' if close else ''}; known keys: {', '.join(KEYS)}")
    for key in ("name", "table", "label", "image"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise DataError(f"{where}: {key!r} is required and must be text ({KEYS[key]})")
    name = doc["name"].strip()
    if not name.replace("-", "_").replace(".", "_").isidentifier():
        raise DataError(f"{where}: name {name!r} may hold only letters, digits, '-', '_' and '.'; rename it")

    def text(key):
        v = doc.get(key)
        if v is not None and not isinstance(v, (str, int)) or isinstance(v, bool):
            raise DataError(f"{where}: {key!r} must be a column name, got {v!r}")
        return None if v is None else str(v).strip()

    def names(key):
        v = doc.get(key)
        if v is None:
            return None
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            raise DataError(f"{where}: {key!r} must be a list of column names, got {v!r}")
        return tuple(str(x).strip() for x in v)

    task = doc.get("task")
    if task is not None and task not in ("binary", "multiclass", "multi-class"):
        raise DataError(f"{where}: task must be binary or multiclass, got {task!r}")
    window = doc.get("window", doc.get("ct_window"))
    if window is not None:
        if isinstance(window, dict) and set(window) == {"center", "width"}:
            c, w = window["center"], window["width"]
            window = [c - w / 2, c + w / 2] if all(isinstance(x, (int, float)) for x in (c, w)) else None
        if not (isinstance(window, list) and len(window) == 2 and all(isinstance(x, (int, float)) for x in window)
                and window[0] < window[1]):
            raise DataError(f"{where}: window must be [lo, hi] with lo < hi (CT: HU, e.g. [-125, 275]) or {{center, width}}")
        window = (float(window[0]), float(window[1]))
    slc = doc.get("slice")
    if slc is not None and not (isinstance(slc, (int, str)) and not isinstance(slc, bool)):
        raise DataError(f"{where}: slice must be an index, 'middle' or a column name, got {slc!r}")
    axis = doc.get("slice_axis", -1)
    if not isinstance(axis, int) or isinstance(axis, bool) or not -3 <= axis <= 2:
        raise DataError(f"{where}: slice_axis must be an integer in [-3, 2], got {axis!r}")
    seed = doc.get("split_seed", 2022)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"{where}: split_seed must be an integer, got {seed!r}")
    fr = doc.get("split_fractions", [0.7, 0.15, 0.15])
    if isinstance(fr, dict):
        fr = [fr.get(s, 0) for s in SPLITS]
    if not (isinstance(fr, list) and len(fr) == 3 and all(isinstance(x, (int, float)) and x > 0 for x in fr)
            and abs(sum(fr) - 1) < 1e-6):
        raise DataError(f"{where}: split_fractions must be three positive numbers (train, val, test) summing to 1, got {fr!r}")
    positive = doc.get("positive")
    return TableSpec(
        path=path, name=name, table=(path.parent / doc["table"].strip()).resolve(), label=doc["label"].strip(),
        image=doc["image"].strip(), id=text("id"), split=text("split"),
        task=None if task is None else task.replace("-", ""), positive=None if positive is None else str(positive),
        features=names("features"), drop=names("drop") or (), categorical=names("categorical") or (),
        numeric=names("numeric") or (), window=window, slice=slc if not isinstance(slc, str) else slc.strip(),
        slice_axis=axis, split_seed=seed, split_fractions=tuple(float(x) for x in fr),
        description=str(doc.get("description", "")),
    )


# ------------------------------------------------------------------------------------- scan
@dataclass
class TableScan:
    """What ``check-data`` reports and the loader builds from; ``issues`` holds every problem found."""

    spec: TableSpec
    df: pd.DataFrame
    issues: list[Issue] = field(default_factory=list)
    y: np.ndarray | None = None
    class_names: list[str] | None = None
    task: str | None = None
    split: np.ndarray | None = None
    split_note: str = ""
    ids: np.ndarray | None = None
    image_paths: list[Path | None] = field(default_factory=list)
    image_info: list[dict | None] = field(default_factory=list)
    image_slices: list | None = None
    content_key: str = ""
    feats: dict | None = None
    constant: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.df)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "warning"]

    def row(self, i: int) -> str:
        """How a message names row ``i``: its line in a CSV/TSV (header = line 1), else its row number."""
        where = f"row {i}" if self.spec.table.suffix.lower() in (".parquet", ".pq") else f"line {i + 2}"
        if self.spec.id and self.ids is not None:
            where += f" ({self.spec.id}={self.ids[i]})"
        return where

    @property
    def image_available(self) -> np.ndarray:
        return np.array([bool(info) and "shape" in info for info in self.image_info], dtype=bool)

    @property
    def channels(self) -> int:
        return 3 if any(info and info.get("channels") == 3 for info in self.image_info) else 1


def _is_empty(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()) or v is pd.NA


def _error(scan: TableScan, msg: str) -> None:
    scan.issues.append(Issue("error", msg))


def _warn(scan: TableScan, msg: str) -> None:
    scan.issues.append(Issue("warning", msg))


def _labels(scan: TableScan) -> None:
    spec, raw = scan.spec, scan.df[scan.spec.label]
    vals = raw.map(lambda v: v.strip() if isinstance(v, str) else v)
    empty = np.array([_is_empty(v) for v in vals])
    if empty.any():
        rows = np.flatnonzero(empty)
        _error(scan, f"label column {spec.label!r} is empty or NaN in {len(rows)} rows: {rows_text(rows, scan.row)}; "
                     "fill in the labels or remove those rows")
    present = vals[~empty]
    as_num = pd.to_numeric(present, errors="coerce")
    if len(present) and as_num.notna().all():
        keys = as_num.to_numpy(dtype=float)
        levels = sorted(set(keys.tolist()))
        names = [str(int(v)) if float(v).is_integer() else str(v) for v in levels]
    else:
        keys = present.astype(str).to_numpy()
        levels = sorted(set(keys.tolist()))
        names = list(levels)
    if len(levels) == 0:
        return
    if len(levels) == 1:
        _error(scan, f"label column {spec.label!r} has a single class ({names[0]!r}) in every labelled row; "
                     "a classifier needs two or more classes")
        return
    task = spec.task or ("binary" if len(levels) == 2 else "multiclass")
    if spec.task is None and len(levels) > MAX_LABEL_LEVELS and as_num.notna().all():
        _error(scan, f"label column {spec.label!r} has {len(levels)} distinct numbers and looks continuous; bench "
                     "benchmarks classification: bin the label into classes (or set task: multiclass if they are classes)")
        return
    if task == "binary" and len(levels) != 2:
        _error(scan, f"label column {spec.label!r} has {len(levels)} classes ({', '.join(names[:6])}); task binary needs "
                     "exactly two: set task: multiclass or fix the labels")
        return
    if spec.positive is not None:
        if task != "binary" or spec.positive not in names:
            _error(scan, f"positive: {spec.positive!r} is not one of the two classes of {spec.label!r} ({', '.join(names)}); "
                         "name one of them or remove the key")
            return
        j = names.index(spec.positive)
        levels = [levels[1 - j], levels[j]]
        names = [names[1 - j], names[j]]
    lookup = {v: k for k, v in enumerate(levels)}
    y = np.full(scan.n, -1, dtype=np.int64)
    y[~empty] = [lookup[v] for v in keys]
    scan.y, scan.class_names, scan.task = y, names, task


def grouped_split(y: np.ndarray, groups: np.ndarray, fractions, seed: int) -> tuple[np.ndarray, str]:
    """A train/val/test split of whole groups (patients), stratified by label when every class allows it."""
    from sklearn.model_selection import train_test_split

    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    gidx = np.arange(len(uniq))
    glabel = y[first]
    f_train, f_val, f_test = fractions
    note = "stratified by label"
    try:
        rest, test = train_test_split(gidx, test_size=f_test, random_state=seed, stratify=glabel)
        train, val = train_test_split(rest, test_size=f_val / (f_train + f_val), random_state=seed, stratify=glabel[rest])
    except ValueError:  # a class with too few groups to stratify
        rest, test = train_test_split(gidx, test_size=f_test, random_state=seed)
        train, val = train_test_split(rest, test_size=f_val / (f_train + f_val), random_state=seed)
        note = "not stratified (a class has too few samples to stratify)"
    gsplit = np.empty(len(uniq), dtype="<U5")
    gsplit[train], gsplit[val], gsplit[test] = "train", "val", "test"
    return gsplit[inverse], note


def _splits(scan: TableScan) -> None:
    spec = scan.spec
    if spec.split:
        norm = normalize_splits(scan.df[spec.split])
        bad = np.flatnonzero(pd.isna(norm))
        if len(bad):
            values = sorted({"<empty>" if _is_empty(v) else str(v) for v in scan.df[spec.split].iloc[bad]})[:5]
            _error(scan, f"split column {spec.split!r} has unknown values ({', '.join(values)}) in {len(bad)} rows: "
                         f"{rows_text(bad, scan.row)}; use train, val or test (or drop the split key to split automatically)")
            return
        scan.split = norm.astype(str)
        scan.split_note = f"column {spec.split!r}"
        if spec.id:
            per = pd.DataFrame({"id": scan.ids, "split": scan.split}).groupby("id", sort=True)["split"].unique()
            leaks = per[per.map(len) > 1]
            if len(leaks):
                shown = "; ".join(f"{i} ({', '.join(sorted(s, key=SPLITS.index))})" for i, s in leaks.iloc[:5].items())
                more = f" and {len(leaks) - 5} more" if len(leaks) > 5 else ""
                _error(scan, f"{spec.id} values in more than one split (leakage): {shown}{more}; put each patient's rows "
                             "in one split, or drop the split key to split by patient automatically")
        return
    if scan.y is None:
        return
    labelled = scan.y >= 0
    groups = scan.ids if spec.id else np.arange(scan.n).astype(str)
    n_groups = len(np.unique(groups[labelled]))
    if n_groups < 10:
        _error(scan, f"only {n_groups} {'patients' if spec.id else 'labelled rows'} to split into train, val and test; "
                     "add samples or give a split column")
        return
    split = np.full(scan.n, "train", dtype="<U5")
    split[labelled], note = grouped_split(scan.y[labelled], groups[labelled], spec.split_fractions, spec.split_seed)
    scan.split = split
    fr = "/".join(f"{f:g}" for f in spec.split_fractions)
    scan.split_note = (f"generated {fr} train/val/test, {note}, grouped by {spec.id}, seed {spec.split_seed}" if spec.id
                       else f"generated {fr} train/val/test, {note}, seed {spec.split_seed}")


def _split_classes(scan: TableScan) -> None:
    if scan.split is None or scan.y is None:
        return
    for s in SPLITS:
        rows = (scan.split == s) & (scan.y >= 0)
        if not rows.any():
            _error(scan, f"the {s} split is empty; every split needs samples (fix the split column or split_fractions)")
        elif scan.task == "binary" and len(np.unique(scan.y[rows])) < 2:
            _error(scan, f"the {s} split holds only class {scan.class_names[int(scan.y[rows][0])]!r}; AUC needs both classes "
                         "in every split: re-split or add samples")


def _duplicates(scan: TableScan) -> None:
    spec = scan.spec
    cells = scan.df[spec.image].map(lambda v: None if _is_empty(v) else str(v).strip())
    if spec.slice_column:  # one volume, several slices: the slice is part of the image
        cells = cells + "#" + scan.df[spec.slice_column].astype(str)
    key = pd.DataFrame({"id": scan.ids if spec.id else "", "image": cells})
    key = key[cells.notna().to_numpy()]
    dup = key[key.duplicated(keep=False)]
    if len(dup):
        groups = dup.groupby(["id", "image"], sort=False).groups
        shown = "; ".join(", ".join(scan.row(int(i)) for i in list(idx)[:3]) + f" ({img})"
                          for (_, img), idx in list(groups.items())[:3])
        what = f"same {spec.id} and same image" if spec.id else "same image"
        _error(scan, f"{len(dup)} duplicate rows ({what}): {shown}{' ...' if len(groups) > 3 else ''}; keep one row per sample")


# ------------------------------------------------------------------------------------- images
def _image_options(spec: TableSpec, slc=None) -> ImageOptions:
    return ImageOptions(window=spec.window, slice=spec.slice if slc is None else slc, slice_axis=spec.slice_axis)


def _probe_images(scan: TableScan, cache_dir) -> None:
    """Find, hash and decode every image once; the result is memoised by the files' sizes and mtimes."""
    spec = scan.spec
    base = spec.table.parent
    paths: list[Path | None] = []
    for v in scan.df[spec.image]:
        paths.append(None if _is_empty(v) else (Path(str(v).strip()).expanduser() if Path(str(v).strip()).is_absolute()
                                                  else base / str(v).strip()))
    slices = None
    if spec.slice_column:
        col = pd.to_numeric(scan.df[spec.slice_column], errors="coerce")
        bad = np.flatnonzero(col.isna().to_numpy() & np.array([p is not None for p in paths]))
        if len(bad):
            _error(scan, f"slice column {spec.slice_column!r} is empty or not an integer in {len(bad)} rows: "
                         f"{rows_text(bad, scan.row)}; give every row with an image its slice index")
        slices = [None if np.isnan(v) else int(v) for v in col.to_numpy(dtype=float)]
    scan.image_paths, scan.image_slices = paths, slices
    opts = json.dumps([spec.window, spec.slice, spec.slice_axis, slices])
    h = hashlib.sha256(f"{CACHE_FORMAT}|{opts}".encode())
    for p in paths:
        try:
            st = os.stat(p) if p is not None else None
        except OSError:
            st = None
        h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    memo = default_cache_dir("table", cache_dir) / f"{spec.name}_probe_{h.hexdigest()[:16]}.json"
    if memo.is_file():
        try:
            saved = json.loads(memo.read_text())
            if len(saved["info"]) == len(paths):
                scan.image_info, scan.content_key = saved["info"], saved["content_key"]
                return
        except (OSError, ValueError, KeyError):
            pass
    content = hashlib.sha256(CACHE_FORMAT.encode())
    infos: list[dict | None] = []
    for i, p in enumerate(paths):
        if p is None:
            infos.append(None)
            content.update(b"<none>\n")
            continue
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            infos.append({"error": "not found", "missing_file": True})
            content.update(b"<missing>\n")
            continue
        except OSError as exc:
            infos.append({"error": f"cannot be read ({exc.strerror or type(exc).__name__})"})
            content.update(b"<unreadable>\n")
            continue
        content.update(hashlib.sha256(data).digest())
        try:
            from bench.data.images import decode_image

            arr, mode = decode_image(data, p, _image_options(spec, None if slices is None else slices[i]))
            infos.append({"shape": [int(arr.shape[1]), int(arr.shape[2])], "channels": int(arr.shape[0]), "mode": mode,
                          "format": p.suffix.lower() or "(none)"})
        except ImageReadError as exc:
            infos.append({"error": str(exc)})
    scan.image_info, scan.content_key = infos, content.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"info": infos, "content_key": scan.content_key}))
        os.replace(tmp, memo)
    except OSError as exc:
        log.warning("cannot write the image-check cache %s (%s)", memo, exc)


def _unreadable(scan: TableScan, i: int) -> str:
    return f"{scan.row(i)}: {scan.image_paths[i]} {scan.image_info[i]['error']}"


def _image_issues(scan: TableScan) -> None:
    spec = scan.spec
    missing = [i for i, info in enumerate(scan.image_info) if info and info.get("missing_file")]
    if missing:
        _error(scan, f"image file not found for {len(missing)} rows: "
                     f"{rows_text(missing, lambda i: f'{scan.row(i)}: {scan.image_paths[i]}')}; fix the paths in column "
                     f"{spec.image!r} (relative to {spec.table.parent}) or empty those cells to mark the images missing")
    bad = [i for i, info in enumerate(scan.image_info) if info and "error" in info and not info.get("missing_file")]
    if bad:
        _error(scan, f"{len(bad)} image files cannot be read: "
                     f"{rows_text(bad, lambda i: _unreadable(scan, i), 3)}; "
                     "replace them, or empty those cells to mark the images missing")
    from bench.data.images import MINMAX

    scaled = [i for i, info in enumerate(scan.image_info) if info and info.get("mode", "").endswith(MINMAX)]
    if scaled:
        _warn(scan, f"{len(scaled)} images hold raw intensities but have no window ({rows_text(scaled, scan.row, 3)}): "
                    "each is min-max scaled on its own, so absolute values (CT: HU) are lost; set window: [lo, hi] "
                    "in the dataset YAML (CT soft tissue: [-125, 275])")
    if scan.n and not scan.image_available.any() and not missing and not bad:
        _error(scan, f"no row has an image (column {spec.image!r} is empty everywhere); fill in the image paths")


# ------------------------------------------------------------------------------------- features
def _features(scan: TableScan) -> None:
    spec, df = scan.spec, scan.df
    reserved = {spec.label, spec.image, spec.id, spec.split, spec.slice_column} - {None}
    if spec.features is not None:
        cols = [c for c in spec.features if c not in reserved and c not in spec.drop]
    else:
        cols = [c for c in df.columns if c not in reserved and c not in spec.drop and not c.startswith("Unnamed:")]
    feats = table_to_features(df, cols, source=spec.name, categorical=spec.categorical, numeric=spec.numeric, strict=True)
    for col, rows, examples in feats["problems"]:
        _error(scan, f"numeric column {col!r} holds non-numeric text in {len(rows)} rows: "
                     f"{rows_text(rows, scan.row, 3)} (e.g. {', '.join(repr(e) for e in examples)}); fix those cells "
                     "(leave a cell empty for a missing value) or list the column under categorical:")
    for col in feats["dropped_columns"]:
        _warn(scan, f"column {col!r} has {df[col].nunique()} distinct text values and looks like an identifier; not used "
                    "as a feature (list it under categorical: to keep it, or under drop: to silence this)")
    # constant columns carry no information: reported and left out
    keep_num = [j for j, c in enumerate(feats["num_names"]) if pd.Series(feats["x_num"][:, j]).nunique() > 1]
    keep_cat = [j for j, c in enumerate(feats["cat_names"]) if df[c].nunique() > 1]
    constant = [c for j, c in enumerate(feats["num_names"]) if j not in keep_num] + \
               [c for j, c in enumerate(feats["cat_names"]) if j not in keep_cat]
    for c in constant:
        _warn(scan, f"column {c!r} is constant ({'empty' if df[c].isna().all() else repr(df[c].dropna().iloc[0])} in every "
                    "row); it is left out of the features")
        feats["types"][c] = "constant (left out)"
    feats["x_num"] = feats["x_num"][:, keep_num]
    feats["num_names"] = [feats["num_names"][j] for j in keep_num]
    feats["x_cat"] = feats["x_cat"][:, keep_cat]
    feats["cat_names"] = [feats["cat_names"][j] for j in keep_cat]
    feats["cat_cardinalities"] = [feats["cat_cardinalities"][j] for j in keep_cat]
    scan.constant = constant
    scan.feats = feats
    if not feats["num_names"] and not feats["cat_names"] and not feats["problems"]:
        _error(scan, f"no feature columns left in {spec.table.name} (besides label, image, id and split); "
                     "add tabular features: bench fuses an image with a table")
    if scan.y is not None and scan.split is not None and not feats["problems"]:
        train = np.flatnonzero((scan.split == "train") & (scan.y >= 0))
        for msg in feature_warnings(feats["x_num"], feats["x_cat"], feats["num_names"], feats["cat_names"],
                                    scan.y, train, scan.task):
            _warn(scan, msg)


def scan_table(spec_or_path, cache_dir=None) -> TableScan:
    """Read the table and every image, and check them; fatal problems (no table, missing columns) raise."""
    spec = spec_or_path if isinstance(spec_or_path, TableSpec) else read_spec(spec_or_path)
    df = read_table(spec.table, what=f"table of dataset {spec.name!r}")
    if df.empty:
        raise DataError(f"table {spec.table} has no rows; one row per sample is expected")
    wanted = [("label", spec.label), ("image", spec.image), ("id", spec.id), ("split", spec.split),
              ("slice", spec.slice_column)]
    wanted += [(k, c) for k in ("features", "drop", "categorical", "numeric") for c in (getattr(spec, k) or ())]
    for key, col in wanted:
        if col is not None and col not in df.columns:
            close = difflib.get_close_matches(col, list(df.columns), n=1)
            raise DataError(f"{spec.path.name}: {key} column {col!r} is not in {spec.table.name}"
                            f"{f' (did you mean {close[0]!r}?)' if close else ''}; columns: {', '.join(list(df.columns)[:12])}")
    df = df.reset_index(drop=True)
    scan = TableScan(spec, df)
    if spec.id:
        ids = df[spec.id].map(lambda v: None if _is_empty(v) else str(v).strip())
        empty = np.flatnonzero(ids.isna().to_numpy())
        if len(empty):
            _error(scan, f"id column {spec.id!r} is empty in {len(empty)} rows: {rows_text(empty, lambda i: f'line {i + 2}')}; "
                         "every row needs its patient id")
        scan.ids = ids.fillna("<missing>").to_numpy(dtype=object).astype(str)
    else:
        scan.ids = np.array([f"row{i}" for i in range(len(df))])
    _labels(scan)
    _splits(scan)
    _split_classes(scan)
    _duplicates(scan)
    _probe_images(scan, cache_dir)
    _image_issues(scan)
    _features(scan)
    return scan


# ------------------------------------------------------------------------------------- loading
def _fill(scan: TableScan, size: int, channels: int, out: np.ndarray) -> None:
    out[...] = 0.0
    for i, (p, info) in enumerate(zip(scan.image_paths, scan.image_info)):
        if p is None or not info or "shape" not in info:
            continue
        slc = None if scan.image_slices is None else scan.image_slices[i]
        try:
            arr, _ = read_image(p, _image_options(scan.spec, slc))
        except ImageReadError as exc:  # changed on disk since the check
            raise DataError(f"image {p} (row {scan.row(i)}) {exc}; run `python -m bench check-data {scan.spec.path}`") from None
        out[i] = resize_batch(to_channels(arr, channels)[None], size)[0]


def build_data(scan: TableScan, *, image_size: int = 64, cache_dir=None) -> MultimodalData:
    """MultimodalData from a scan without errors; images resized once and cached by content key."""
    if scan.errors:
        raise DataError(f"{scan.spec.path.name}: {len(scan.errors)} problem(s) in the data, first: {scan.errors[0].message}; "
                        f"run `python -m bench check-data {scan.spec.path}` to see them all")
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size must be an integer >= 8, got {image_size!r}")
    spec, feats = scan.spec, scan.feats
    keep = np.flatnonzero(scan.y >= 0)  # every label is present when there are no errors
    channels = scan.channels
    key = hashlib.sha256(f"{CACHE_FORMAT}|{image_size}|{channels}|{scan.content_key}".encode()).hexdigest()[:16]
    cache_file = default_cache_dir("table", cache_dir) / f"{spec.name}_{image_size}px_{key}.npy"
    images, was_cached = cached_npy(cache_file, (scan.n, channels, image_size, image_size), np.float32,
                                    lambda out: _fill(scan, image_size, channels, out))
    h = hashlib.sha256()
    with open(spec.table, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps(spec.settings(), sort_keys=True).encode())
    h.update(scan.content_key.encode())
    avail = scan.image_available
    formats = sorted({info["format"] for info in scan.image_info if info and "format" in info})
    n_missing = int((~avail).sum())
    note = (f"{spec.name}: label {spec.label} ({scan.task}, {len(scan.class_names)} classes), images from column "
            f"{spec.image} ({', '.join(formats)}; {n_missing} missing), split: {scan.split_note}")
    y, split = scan.y, scan.split
    provenance = Provenance(
        dataset=spec.name, source="real", version=f"table {spec.table.name}", checksum=h.hexdigest()[:16],
        protocol_note=note,
        details={
            "config": str(spec.path), "table": str(spec.table), "settings": spec.settings(), "split": scan.split_note,
            "feature_types": feats["types"], "cat_levels": feats["cat_levels"],
            "n_per_split": {s: int((split == s).sum()) for s in SPLITS},
            "images_missing": n_missing, "image_formats": formats, "image_cache": str(cache_file),
            "image_cache_hit": was_cached, "description": spec.description,
        },
    )
    return MultimodalData(
        images=images if len(keep) == scan.n else images[keep], x_num=feats["x_num"][keep], x_cat=feats["x_cat"][keep],
        y=y[keep], split=split[keep], num_names=list(feats["num_names"]), cat_names=list(feats["cat_names"]),
        cat_cardinalities=list(feats["cat_cardinalities"]), task=scan.task, n_classes=len(scan.class_names),
        provenance=provenance, ids=scan.ids[keep], class_names=list(scan.class_names), image_available=avail[keep],
    )


@register_dataset("table")
def load_table(*, config=None, root=None, image_size: int = 64, cache_dir=None, **_) -> MultimodalData:
    """Your own data: a CSV/TSV/Parquet table with an image-path column, described by a YAML (config=)."""
    config = config or root
    if config is None:
        raise DataError("the table dataset needs its YAML: python -m bench run --suite SUITE --dataset my-cohort.yaml")
    return build_data(scan_table(config, cache_dir=cache_dir), image_size=image_size, cache_dir=cache_dir)
