"""Check a whole input table before anything is written, and name the column, row and reason."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

Kind = Literal["text", "int", "float", "timestamp"]


class InputError(ValueError):
    """Bad input. ``str(err)`` names the file, column, row (1-based data row) and reason."""

    def __init__(self, source: str, column: str, reason: str, row: int | None = None):
        self.source, self.column, self.row, self.reason = source, column, row, reason
        where = f"column '{column}'" + (f", row {row}" if row is not None else "")
        super().__init__(f"{source}: {where}: {reason}")


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind = "text"
    required: bool = True
    allowed: tuple[str, ...] | None = None
    positive: bool = False


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame of strings and native types."""
    if not path.exists():
        raise InputError(str(path), "-", "file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    raise InputError(str(path), "-", f"unsupported file type '{suffix}' (use .csv or .parquet)")


def _first_bad(mask: pd.Series) -> int | None:
    bad = mask.to_numpy().nonzero()[0]
    return int(bad[0]) if len(bad) else None


def _as_utc(values: pd.Series) -> pd.Series:
    # Naive timestamps (the UCI files) are read as UTC.
    return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")


def _convert(raw: pd.Series, col: Column, source: str) -> pd.Series:
    if col.kind == "timestamp" and pd.api.types.is_datetime64_any_dtype(raw):
        return _as_utc(raw)  # already typed (Parquet): nothing to parse
    present = raw.notna()
    if raw.dtype == object:
        present &= raw.astype(str).str.strip() != ""
    raw_or_none = raw.astype(object).where(present, None)
    if col.kind == "text":
        return raw_or_none.map(lambda v: None if v is None else str(v).strip())
    if col.kind == "timestamp":
        converted = pd.to_datetime(raw_or_none, errors="coerce", utc=True, format="mixed")
        noun = "a timestamp"
    else:
        converted = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw_or_none, errors="coerce")
        noun = "a number"
        if col.kind == "int":
            noun = "an integer"
            fractional = converted.notna() & (converted != converted.round())
            converted = converted.where(~fractional, float("nan"))
    unparsable = present & converted.isna()
    row = _first_bad(unparsable)
    if row is not None:
        raise InputError(source, col.name, f"{raw.iloc[row]!r} is not {noun}", row + 1)
    if col.positive:
        row = _first_bad(present & (converted <= 0))
        if row is not None:
            raise InputError(source, col.name, f"{raw.iloc[row]!r} must be greater than 0", row + 1)
    if col.kind == "int":
        return converted.astype("Int64")
    return converted


def parse_frame(df: pd.DataFrame, columns: list[Column], source: str) -> pd.DataFrame:
    """Typed copy of ``df`` holding exactly ``columns``; raises InputError at the first problem."""
    missing = [c.name for c in columns if c.required and c.name not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns)) or "none"
        raise InputError(source, missing[0], f"missing (the file has: {have})")
    out = {}
    for col in columns:
        if col.name not in df.columns:
            out[col.name] = pd.Series([None] * len(df), index=df.index, dtype=object)
            continue
        values = _convert(df[col.name].reset_index(drop=True), col, source)
        if col.required:
            row = _first_bad(values.isna())
            if row is not None:
                raise InputError(source, col.name, "empty, but required", row + 1)
        if col.allowed is not None:
            row = _first_bad(values.notna() & ~values.isin(col.allowed))
            if row is not None:
                raise InputError(
                    source, col.name, f"{values.iloc[row]!r} is not one of {', '.join(col.allowed)}", row + 1
                )
        if col.kind == "int":
            # Python ints and None: a nullable integer column must not turn into floats ("1.0"),
            # which PostgreSQL's COPY refuses for an integer column (found by the API fuzzer).
            values = values.astype(object).where(values.notna(), None)
        out[col.name] = values.to_numpy()
    return pd.DataFrame(out)
