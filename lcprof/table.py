"""A light table: named columns of plain Python values, without pandas.

The analytic commands answer in a fraction of a second, and importing pandas alone takes longer
than that; so their library functions return a :class:`Table`. Notebook users get a DataFrame
with ``table.df`` (or ``table.to_pandas()``), which imports pandas on first use.

Values are plain Python (``int``, ``float``, ``str``, ``bool``, ``None``): numpy scalars are
converted on the way in, so byte counts stay exact integers however large.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def plain(v: Any) -> Any:
    """A numpy scalar as the Python scalar it holds (int stays int, exactly); others unchanged."""
    item = getattr(v, "item", None)
    if item is not None and type(v).__module__ == "numpy" and getattr(v, "ndim", 1) == 0:
        return item()
    return v


class Column(list):
    """One column: a list with the few array conveniences callers use (``tolist``, ``to_numpy``)."""

    def tolist(self) -> list:
        return list(self)

    def to_numpy(self):
        import numpy as np

        return np.asarray(self)


class Table:
    """Rows of records with a fixed column order.

    ``t["col"]`` is a :class:`Column`; ``t[["a", "b"]]`` a table of those columns; ``len(t)`` the
    number of rows; ``t.records()`` a list of dicts; ``t.df`` a pandas DataFrame.
    """

    def __init__(self, columns: dict[str, Any] | None = None, *, n_rows: int | None = None):
        cols: dict[str, list] = {}
        length = n_rows
        scalars = {}
        for name, values in (columns or {}).items():
            if isinstance(values, (str, bytes)) or not _is_sequence(values):
                scalars[name] = plain(values)
                cols[name] = None  # placeholder: keeps the column order
                continue
            vals = [plain(v) for v in values]
            if length is None:
                length = len(vals)
            elif len(vals) != length:
                raise ValueError(f"column {name!r} has {len(vals)} values, expected {length}")
            cols[name] = vals
        length = length or 0
        for name, value in scalars.items():
            cols[name] = [value] * length
        self._cols: dict[str, list] = cols
        self._n = length

    @classmethod
    def from_records(cls, records: Iterable[dict], columns: Sequence[str] | None = None) -> "Table":
        """A table from dicts; columns in order of first appearance (or ``columns``); missing -> None."""
        recs = list(records)
        names: list[str] = list(columns) if columns is not None else []
        if columns is None:
            seen = set()
            for r in recs:
                for k in r:
                    if k not in seen:
                        seen.add(k)
                        names.append(k)
        t = cls.__new__(cls)
        t._cols = {k: [plain(r.get(k)) for r in recs] for k in names}
        t._n = len(recs)
        return t

    # ----- access --------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: str) -> bool:
        return name in self._cols

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self._cols:
                raise KeyError(f"no column {key!r}; columns: {', '.join(self._cols)}")
            return Column(self._cols[key])
        if isinstance(key, (list, tuple)):
            return self.select(key)
        raise TypeError(f"index a Table by a column name or a list of names, not {type(key).__name__}")

    def __setitem__(self, name: str, values) -> None:
        if isinstance(values, (str, bytes)) or not _is_sequence(values):
            self._cols[name] = [plain(values)] * self._n
            return
        vals = [plain(v) for v in values]
        if len(vals) != self._n:
            raise ValueError(f"column {name!r} has {len(vals)} values, the table {self._n} rows")
        self._cols[name] = vals

    def select(self, names: Sequence[str]) -> "Table":
        missing = [k for k in names if k not in self._cols]
        if missing:
            raise KeyError(f"no column(s) {', '.join(map(repr, missing))}; columns: {', '.join(self._cols)}")
        t = Table.__new__(Table)
        t._cols = {k: list(self._cols[k]) for k in names}
        t._n = self._n
        return t

    def where(self, keep: Sequence[bool]) -> "Table":
        """The rows where ``keep`` is true."""
        keep = list(keep)
        if len(keep) != self._n:
            raise ValueError(f"{len(keep)} flags for {self._n} rows")
        t = Table.__new__(Table)
        t._cols = {k: [v for v, flag in zip(vals, keep) if flag] for k, vals in self._cols.items()}
        t._n = sum(bool(f) for f in keep)
        return t

    def rows(self) -> list[list]:
        cols = list(self._cols.values())
        return [[c[i] for c in cols] for i in range(self._n)]

    def records(self) -> list[dict]:
        names = list(self._cols)
        return [dict(zip(names, row)) for row in self.rows()]

    def row(self, i: int) -> dict:
        return {k: v[i] for k, v in self._cols.items()}

    # ----- pandas, for notebook users ------------------------------------------------------
    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame({k: list(v) for k, v in self._cols.items()}, columns=self.columns)

    @property
    def df(self):
        return self.to_pandas()

    def _repr_html_(self) -> str:  # pragma: no cover - notebooks
        return self.to_pandas()._repr_html_()

    def __repr__(self) -> str:
        from lcprof.render import to_table

        return to_table(self)

    def __eq__(self, other) -> bool:
        return isinstance(other, Table) and self._cols == other._cols


def _is_sequence(v) -> bool:
    if isinstance(v, dict):
        return False
    if hasattr(v, "ndim"):
        return getattr(v, "ndim") > 0
    return hasattr(v, "__len__") and hasattr(v, "__iter__")
