"""Tables for anomaly detection: CSV/TSV, Parquet and `.npz` (`X`, optional `y`) as NumPy arrays.

    from keras_vae.datasets import tabular
    table = tabular.read_table("data.csv", label_column="label")   # header detected
    table.x        # float64 (n, D), the feature columns, raw values
    table.y        # int64 (n,) labels (1 = anomaly), or None; never a feature
    table.columns  # the D feature names

Missing values (empty fields, NA, NaN, null, ?) are refused with the column and row named,
unless `impute="median"` (or "mean") fills them with the column's statistic. Non-numeric
values, constant columns and rows of another length are refused the same way: one line that
names the column and the row (rows count from 1, the header excluded) and the fix.
"""

import csv
import math
import os
from typing import NamedTuple, Optional

import numpy as np

#: File name endings read as tables.
CSV_SUFFIXES = (".csv", ".tsv", ".tab")
PARQUET_SUFFIXES = (".parquet", ".pq")
TABLE_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
MISSING = ("", "na", "nan", "n/a", "null", "none", "?")
IMPUTE = (None, "median", "mean")


class Table(NamedTuple):
    """A table's feature matrix, labels and names."""

    x: np.ndarray                 # float64 (n, D)
    y: Optional[np.ndarray]       # int64 (n,) or None
    columns: list                 # D feature names
    label_column: Optional[str]   # the label column's name, or None


def is_table_path(path):
    """True for a path ending in a table suffix, or an `.npz` holding an `X` array."""
    path = os.fspath(path)
    if path.lower().endswith(TABLE_SUFFIXES):
        return True
    if path.lower().endswith(".npz") and os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return "X" in archive.files
        except (OSError, ValueError):
            return False
    return False


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def _is_missing(text):
    return text.strip().lower() in MISSING


def _sniff_delimiter(path, first_line):
    if path.lower().endswith((".tsv", ".tab")):
        return "\t"
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_csv_rows(path, delimiter):
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
            if delimiter is None:
                delimiter = _sniff_delimiter(path, first)
            handle.seek(0)
            rows = [row for row in csv.reader(handle, delimiter=delimiter)
                    if row and any(f.strip() for f in row)]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text table ({err.reason} at byte "
                         f"{err.start}).") from None
    if not rows:
        raise ValueError(f"{path} holds no rows.")
    return rows


def _detect_header(rows, header):
    """Whether the first row is a header: "auto" says yes when it holds a non-numeric field
    where the next row holds a number (or when it is the only row and not all numbers)."""
    if header in (True, False):
        return header
    if header != "auto":
        raise ValueError(f"header must be 'auto', True or False, got {header!r}.")
    first = rows[0]
    if len(rows) == 1:
        return any(_number(f) is None and not _is_missing(f) for f in first)
    second = rows[1]
    return any(_number(a) is None and not _is_missing(a) and b is not None
               and _number(b) is not None for a, b in zip(first, second))


def _select(names, columns, label_column, path):
    """Indices of the feature columns and of the label column (or None)."""
    def index_of(key, what):
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 0 <= key < len(names):
                raise ValueError(f"{path}: {what} index {key} is out of range: the table has "
                                 f"{len(names)} columns (0..{len(names) - 1}).")
            return int(key)
        key = str(key)
        if key in names:
            return names.index(key)
        if key.isdigit() and int(key) < len(names):
            return int(key)
        raise ValueError(f"{path}: no column named {key!r}; the columns are "
                         f"{', '.join(map(repr, names[:20]))}"
                         f"{' ...' if len(names) > 20 else ''}.")

    label = None if label_column is None else index_of(label_column, "label column")
    if columns is None:
        chosen = [i for i in range(len(names)) if i != label]
    else:
        if isinstance(columns, str):
            columns = [c for c in columns.split(",") if c]
        chosen = [index_of(c, "column") for c in columns]
        if label is not None and label in chosen:
            raise ValueError(f"{path}: the label column {names[label]!r} is also listed as a "
                             "feature column; the label is never a feature.")
    if not chosen:
        raise ValueError(f"{path}: no feature columns are left to read.")
    return chosen, label


def _labels(values, name, path, row_offset=1):
    out = np.empty(len(values), dtype="int64")
    for i, v in enumerate(values):
        number = _number(str(v)) if v is not None else None
        if number is None or not math.isfinite(number) or number != int(number):
            raise ValueError(f"{path}: label column {name!r}, row {i + row_offset}: "
                             f"{v!r} is not an integer label (use 0 = normal, 1 = anomaly).")
        out[i] = int(number)
    return out


def _finish(x, names, y, label_name, path, impute, allow_constant):
    """Missing values, constant columns; returns the Table."""
    if impute not in IMPUTE:
        raise ValueError(f"impute must be one of {IMPUTE}, got {impute!r}.")
    missing = np.isnan(x)
    if missing.any():
        if impute is None:
            row, col = np.argwhere(missing)[0]
            raise ValueError(f"{path}: column {names[col]!r}, row {row + 1} is missing "
                             f"({int(missing.sum())} missing values in all); impute them "
                             "(impute='median', --impute median) or drop the column.")
        empty = missing.all(axis=0)
        with np.errstate(all="ignore"):
            fill = np.where(empty, np.nan, (np.nanmedian if impute == "median" else np.nanmean)(
                np.where(empty, 0.0, x), axis=0))
        if empty.any():
            col = int(np.argmax(empty))
            raise ValueError(f"{path}: column {names[col]!r} has no values at all; drop it.")
        x = np.where(missing, fill, x)
    if not np.all(np.isfinite(x)):
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{path}: column {names[col]!r}, row {row + 1} is infinite; "
                         "replace it with a finite number.")
    if not allow_constant and len(x) > 1:
        constant = np.all(x == x[:1], axis=0)
        if constant.any():
            col = int(np.argmax(constant))
            raise ValueError(f"{path}: column {names[col]!r} is constant ({x[0, col]:g} in "
                             "every row) and carries no information; leave it out with "
                             "columns=... (--columns) or pass allow_constant=True.")
    return Table(x.astype("float64"), y, [str(n) for n in names], label_name)


def column_names(path, header="auto", delimiter=None):
    """The column names of a table file (for a CSV without header: "0", "1", ...)."""
    path = os.fspath(path)
    if path.lower().endswith(PARQUET_SUFFIXES):
        import pyarrow.parquet as pq
        return list(pq.read_schema(path).names)
    if path.lower().endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            return [str(i) for i in range(archive["X"].shape[1])]
    rows = _read_csv_rows(path, delimiter)
    if _detect_header(rows, header):
        return [f.strip() for f in rows[0]]
    return [str(i) for i in range(len(rows[0]))]


def read_csv(path, columns=None, label_column=None, header="auto", delimiter=None,
             impute=None, allow_constant=False):
    """A CSV / TSV file as a `Table`.

    Args:
        path: the file (.csv, .tsv or any delimited text).
        columns: feature columns to keep (names or 0-based indices, a list or a
            comma-separated string); default every column but the label.
        label_column: the label column (name or index): kept out of the features.
        header: "auto" (detected), True or False (then the names are "0", "1", ...).
        delimiter: None detects it (tab for .tsv; else the most frequent of , tab ; |
            in the first line).
        impute: None (missing values are an error), "median" or "mean".
        allow_constant: keep constant columns instead of refusing them.
    """
    path = os.fspath(path)
    rows = _read_csv_rows(path, delimiter)
    has_header = _detect_header(rows, header)
    names = [f.strip() for f in rows[0]] if has_header else [str(i) for i in
                                                               range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    if not body:
        raise ValueError(f"{path} has a header but no data rows.")
    width = len(names)
    for i, row in enumerate(body):
        if len(row) != width:
            raise ValueError(f"{path}: row {i + 1} has {len(row)} fields but "
                             f"{'the header has' if has_header else 'row 1 has'} {width}; "
                             "every row needs the same number of fields.")
    chosen, label = _select(names, columns, label_column, path)
    x = np.empty((len(body), len(chosen)))
    for i, row in enumerate(body):
        for j, c in enumerate(chosen):
            text = row[c]
            value = _number(text)
            if value is None:
                if _is_missing(text):
                    value = math.nan
                else:
                    raise ValueError(
                        f"{path}: column {names[c]!r}, row {i + 1} holds {text.strip()!r}, "
                        "not a number; leave the column out (columns=..., --columns) or "
                        "encode it as numbers.")
            x[i, j] = value
    y = None if label is None else _labels([row[label].strip() for row in body], names[label],
                                           path)
    return _finish(x, [names[c] for c in chosen], y, None if label is None else names[label],
                   path, impute, allow_constant)


def read_parquet(path, columns=None, label_column=None, impute=None, allow_constant=False):
    """A Parquet file as a `Table` (needs pyarrow); arguments as `read_csv`."""
    path = os.fspath(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("Reading Parquet needs pyarrow: pip install pyarrow.") from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises its own error types for bad files
        raise ValueError(f"Cannot read {path} as Parquet ({type(err).__name__}: {err}).") \
            from None
    names = list(table.column_names)
    chosen, label = _select(names, columns, label_column, path)
    x = np.empty((table.num_rows, len(chosen)))
    for j, c in enumerate(chosen):
        column = table.column(c)
        try:
            values = column.to_numpy(zero_copy_only=False)
            x[:, j] = np.asarray(values, dtype="float64")
        except (ValueError, TypeError):
            values = column.to_pylist()
            for i, v in enumerate(values):
                if v is not None and _number(str(v)) is None:
                    raise ValueError(f"{path}: column {names[c]!r}, row {i + 1} holds {v!r}, "
                                     "not a number; leave the column out (columns=..., "
                                     "--columns) or encode it as numbers.") from None
            x[:, j] = [math.nan if v is None else float(v) for v in values]
    y = None if label is None else _labels(table.column(label).to_pylist(), names[label], path)
    return _finish(x, [names[c] for c in chosen], y, None if label is None else names[label],
                   path, impute, allow_constant)


def read_npz(path, columns=None, label_column=None, impute=None, allow_constant=False):
    """An `.npz` with a 2-D array `X` (and optional labels `y`) as a `Table`; the columns
    are named "0", "1", ...; `label_column` is ignored (the labels are `y`)."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read {path} as a .npz archive ({err}).") from None
    if "X" not in arrays:
        raise ValueError(f"{path} has no array named 'X' (it holds {sorted(arrays)}).")
    x = arrays["X"]
    if x.ndim != 2:
        raise ValueError(f"{path}: X has shape {x.shape}; a table needs (rows, columns).")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{path}: X has dtype {x.dtype}; expected numbers.")
    names = [str(i) for i in range(x.shape[1])]
    chosen, _ = _select(names, columns, None, path)
    y = arrays.get("y")
    if y is not None:
        y = _labels(np.ravel(y).tolist(), "y", path)
        if len(y) != len(x):
            raise ValueError(f"{path}: y has {len(y)} labels for {len(x)} rows of X.")
    return _finish(x[:, chosen].astype("float64"), [names[c] for c in chosen], y,
                   None if y is None else "y", path, impute, allow_constant)


def read_table(path, columns=None, label_column=None, header="auto", delimiter=None,
               impute=None, allow_constant=False):
    """A CSV/TSV, Parquet or `.npz` (`X`, `y`) file as a `Table`, by its name's ending.

    See `read_csv` for the arguments; `header` and `delimiter` apply to text files only.

    Raises:
        FileNotFoundError: no such file. ValueError: one line naming the column and row of
        a non-numeric, missing or infinite value, a constant column, a ragged row, or an
        unknown column name.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Table not found: {path}")
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return read_parquet(path, columns, label_column, impute, allow_constant)
    if lower.endswith(".npz"):
        return read_npz(path, columns, label_column, impute, allow_constant)
    return read_csv(path, columns, label_column, header, delimiter, impute, allow_constant)
