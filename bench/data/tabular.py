"""Table helpers shared by every adapter: reading tables, typing columns, categorical codes, splits.

Column typing (:func:`table_to_features`): a bool column, or one with exactly two distinct non-null
values (sex, smoker, yes/no), is *boolean* (encoded as a two-level categorical, levels sorted so
F/M -> 0/1 and No/Yes -> 0/1); other numeric columns (or text that parses as numbers) are *numeric*,
float with NaN kept (imputation is fitted on the training split later); other text columns with at
most :data:`MAX_TEXT_LEVELS` levels are *categorical*; text with more levels looks like an
identifier and is dropped with a warning. ``strict=True`` (the table dataset) also reports a
mostly-numeric column with stray text cells instead of silently typing it categorical.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import DataError

log = logging.getLogger(__name__)

MAX_TEXT_LEVELS = 50
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
TABLE_EXTS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": None, ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: Path, what: str = "table") -> pd.DataFrame:
    """A CSV, TSV or Parquet file as a DataFrame with stripped column names; one-line DataError otherwise."""
    path = Path(path)
    kind = TABLE_EXTS.get(path.suffix.lower(), ",")
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} not found; fix the path (relative paths start at the dataset YAML's folder)")
    try:
        if kind == "parquet":
            df = pd.read_parquet(path)
        elif kind is None:  # .txt: sniff the delimiter
            df = pd.read_csv(path, sep=None, engine="python")
        else:
            df = pd.read_csv(path, sep=kind, low_memory=False)
    except ImportError:
        raise DataError(f"reading Parquet ({path.name}) needs pyarrow: pip install -e '.[parquet]' (or save the table as CSV)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sep = {",": "comma-separated", "\t": "tab-separated"}.get(kind or "", "delimited")
        raise DataError(f"cannot parse {path}: {first}; it must be a {sep} table with a header row"
                        if kind != "parquet" else f"cannot read {path} as Parquet: {first}") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def encode_categorical(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes in ``[0, cardinality)``: sorted levels first, then one extra code for missing values."""
    nonnull = values.dropna()
    levels = list(pd.unique(nonnull))
    try:
        levels = sorted(levels)
    except TypeError:  # mixed types: order by text
        levels = sorted(levels, key=str)
    lookup = {v: i for i, v in enumerate(levels)}
    codes = np.full(len(values), len(levels), dtype=np.int64)
    mask = values.notna().to_numpy()
    codes[mask] = [lookup[v] for v in values[mask]]
    names = [str(v) for v in levels]
    if not mask.all():
        names.append("<missing>")
    return codes, names


def _as_number(s: pd.Series) -> pd.Series:
    """Text -> float (NaN where a cell is not a number); numbers unchanged."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("float64")
    return pd.to_numeric(s.astype("object").map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")


def table_to_features(df: pd.DataFrame, columns: list[str], *, source: str, categorical=(), numeric=(),
                      strict: bool = False) -> dict:
    """Type ``columns`` of ``df`` and encode them: numeric (float32, NaN kept) and categorical (int64 codes).

    ``categorical`` / ``numeric`` force a column's type. Returns the arrays, names, cardinalities,
    levels, ``types`` (column -> numeric | categorical | boolean | dropped) and, when ``strict``,
    ``problems``: ``(column, rows with stray text, examples)`` of mostly-numeric columns.
    """
    num_names, cat_names, num_cols, cat_cols, levels, dropped = [], [], [], [], {}, []
    types: dict[str, str] = {}
    problems: list[tuple[str, list[int], list[str]]] = []
    categorical, numeric = set(categorical), set(numeric)
    for col in columns:
        s = df[col]
        nonnull = s.dropna()
        if strict and s.dtype == object:
            nonnull = nonnull[nonnull.astype(str).str.strip() != ""]
        n_distinct = nonnull.nunique()
        as_num = None
        if pd.api.types.is_bool_dtype(s.dtype):
            as_num = None
        elif pd.api.types.is_numeric_dtype(s.dtype):
            as_num = s.astype("float64")
        else:
            parsed = _as_number(nonnull)
            if len(parsed) and parsed.notna().all():
                as_num = _as_number(s)
            elif strict and col not in categorical and len(parsed) and (
                    col in numeric or parsed.notna().mean() >= 0.5):
                bad = nonnull.index[parsed.isna().to_numpy()]
                rows = [int(df.index.get_loc(i)) for i in bad]
                problems.append((col, rows, [str(v) for v in nonnull[bad].iloc[:3]]))
                types[col] = "numeric (has text)"
                continue
        if col in numeric and as_num is None and not pd.api.types.is_bool_dtype(s.dtype):
            as_num = _as_number(s)
        if col in categorical or (col not in numeric and (
                n_distinct == 2 or (as_num is None and n_distinct <= MAX_TEXT_LEVELS))):
            values = s if as_num is None else as_num
            if strict and values.dtype == object:
                values = values.map(lambda v: v.strip() if isinstance(v, str) else v).replace("", np.nan)
            codes, names = encode_categorical(values)
            cat_names.append(col)
            cat_cols.append(codes)
            levels[col] = names
            types[col] = "boolean" if n_distinct == 2 and col not in categorical else "categorical"
        elif as_num is not None:
            num_names.append(col)
            num_cols.append(as_num.to_numpy(dtype=np.float64))
            types[col] = "numeric"
        else:
            dropped.append(col)
            types[col] = "dropped (identifier-like text)"
            log.warning("%s: column %r has %d text levels and looks like an identifier; dropped", source, col, n_distinct)
    n = len(df)
    x_num = np.stack(num_cols, axis=1).astype(np.float32) if num_cols else np.zeros((n, 0), np.float32)
    x_cat = np.stack(cat_cols, axis=1).astype(np.int64) if cat_cols else np.zeros((n, 0), np.int64)
    return {
        "x_num": x_num,
        "x_cat": x_cat,
        "num_names": num_names,
        "cat_names": cat_names,
        "cat_cardinalities": [len(levels[c]) for c in cat_names],
        "cat_levels": levels,
        "dropped_columns": dropped,
        "types": types,
        "problems": problems,
    }


def normalize_splits(values: pd.Series) -> np.ndarray:
    """Split names normalised to train / val / test (aliases accepted); None where unknown or empty."""
    return values.astype("object").map(
        lambda v: SPLIT_ALIASES.get(str(v).strip().lower()) if pd.notna(v) else None).to_numpy(dtype=object)


def parse_splits(values: pd.Series, source: str, column: str) -> np.ndarray:
    """Normalised split names; a one-line DataError naming the unknown values."""
    norm = normalize_splits(values)
    bad = pd.isna(norm)
    if bad.any():
        unknown = sorted({str(v) for v in values[bad]})[:5]
        raise DataError(
            f"{source}: {int(bad.sum())} rows have an unknown {column} value ({', '.join(unknown)}); use train, val or test"
        )
    return norm.astype(str)
