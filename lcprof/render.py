"""Rendering tables and records as a text table, JSON (a list of flat records) or CSV.

Accepts a :class:`lcprof.table.Table`, a dict (one record), a list of dicts, or a pandas
DataFrame (recognised without importing pandas, so the analytic commands never load it).
Numbers are written as they are: integers exactly, floats with all their digits (JSON, CSV)
or four significant digits (table). NaN is written as null (JSON) or an empty cell (CSV).
"""

from __future__ import annotations

import csv
import io
import json
import math

FORMATS = ("table", "json", "csv")


def _clean(v):
    """A value as plain JSON-ready Python: numpy scalars unwrapped, NaN -> None, inf -> 'inf'."""
    mod = type(v).__module__
    if mod == "numpy" and hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (tuple, list)):
        return [_clean(x) for x in v]
    return v


def _is_dataframe(obj) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "to_dict") and hasattr(obj, "columns")


def columns_and_rows(obj) -> tuple[list[str], list[list]]:
    """(column names, rows of cleaned values) of anything :func:`render` accepts."""
    from lcprof.table import Table

    if isinstance(obj, Table):
        return obj.columns, [[_clean(v) for v in r] for r in obj.rows()]
    if _is_dataframe(obj):
        names = [str(c) for c in obj.columns]
        return names, [[_clean(v) for v in r] for r in obj.itertuples(index=False, name=None)]
    recs = [obj] if isinstance(obj, dict) else list(obj)
    t = Table.from_records(recs)
    return t.columns, [[_clean(v) for v in r] for r in t.rows()]


def records(obj) -> list[dict]:
    """A list of flat records (dicts of plain values)."""
    if isinstance(obj, dict):
        return [{k: _clean(v) for k, v in obj.items()}]
    names, rows = columns_and_rows(obj)
    return [dict(zip(names, r)) for r in rows]


def _fmt_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "0" if v == 0 else f"{v:.4g}"
    return " ".join(str(v).split())  # one line per row; surrounding blanks dropped


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns left-aligned, two spaces apart, headers underlined (tabulate's "simple" layout)."""
    widths = [len(h) + 2 for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def to_table(obj, title: str | None = None) -> str:
    if isinstance(obj, dict):
        text = _text_table(["field", "value"], [[str(k), _fmt_cell(_clean(v))] for k, v in obj.items()])
    else:
        names, rows = columns_and_rows(obj)
        text = _text_table(names, [[_fmt_cell(v) for v in r] for r in rows])
    return f"{title}\n{text}" if title else text


def _csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def to_csv(obj) -> str:
    names, rows = columns_and_rows(obj)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for r in rows:
        w.writerow([_csv_cell(v) for v in r])
    return buf.getvalue().rstrip("\n")


def render(obj, fmt: str = "table", title: str | None = None) -> str:
    if fmt == "json":
        return json.dumps(records(obj), indent=1)
    if fmt == "csv":
        return to_csv(obj)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return to_table(obj, title)
