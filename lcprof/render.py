"""Rendering DataFrames and records as table, JSON (a list of flat records) or CSV."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd

FORMATS = ("table", "json", "csv")


def _clean(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        v = float(v)
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (tuple, list)):
        return [_clean(x) for x in v]
    return v


def records(obj) -> list[dict]:
    if isinstance(obj, pd.DataFrame):
        return [{k: _clean(v) for k, v in r.items()} for r in obj.to_dict(orient="records")]
    if isinstance(obj, dict):
        return [{k: _clean(v) for k, v in obj.items()}]
    return [{k: _clean(v) for k, v in r.items()} for r in obj]


def _fmt_cell(v):
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.4g}"
        return f"{v:.4g}"
    return v


def to_table(obj, title: str | None = None) -> str:
    from tabulate import tabulate

    if isinstance(obj, dict):
        rows = [(k, _fmt_cell(_clean(v))) for k, v in obj.items()]
        text = tabulate(rows, headers=["field", "value"], tablefmt="simple", disable_numparse=True)
    else:
        df = obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj)
        rows = [[_fmt_cell(_clean(v)) for v in r] for r in df.itertuples(index=False)]
        text = tabulate(rows, headers=list(df.columns), tablefmt="simple", disable_numparse=True)
    return f"{title}\n{text}" if title else text


def render(obj, fmt: str = "table", title: str | None = None) -> str:
    if fmt == "json":
        return json.dumps(records(obj), indent=1)
    if fmt == "csv":
        df = pd.DataFrame(records(obj))
        buf = io.StringIO()
        df.to_csv(buf, index=False, float_format=None)
        return buf.getvalue().rstrip("\n")
    return to_table(obj, title)
