"""Human display of plans: section tables with GiB, seconds and shares spelled out. No torch."""

from __future__ import annotations

import pandas as pd

from lcprof.units import fmt_bytes, fmt_seconds, fmt_tokens


#: Record keys that hold token counts (shown as ``128k (131072)``).
TOKEN_KEYS = ("longest_n_meeting_ttft", "longest_long_keeping_short_ttft", "activation_tokens", "kv_cache_tokens",
              "max_model_len", "max_num_batched_tokens")


def fmt_value(key: str, v) -> str:
    """One record value for people: bytes in GiB (2^30), seconds with a unit, shares in percent."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    if key.endswith("_n") or key in TOKEN_KEYS:
        return f"{fmt_tokens(int(v))} ({int(v)})" if fmt_tokens(int(v)) != str(int(v)) else str(int(v))
    if "bytes" in key:
        if "per_token" in key:
            return f"{int(round(v))} B"
        return fmt_bytes(v)
    if key.endswith("_s"):
        return fmt_seconds(v)
    if key.endswith("_share") or key.endswith("_share_max") or key == "memory_utilization":
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def section_frames(plans) -> list[tuple[str, pd.DataFrame]]:
    """For each section, a (field x plan) table; one column per plan, named by its KV dtype."""
    out = []
    titles = [t for t, _ in plans[0].sections()]
    for title in titles:
        keys: list[str] = []
        for p in plans:
            for t, part in p.sections():
                if t == title:
                    keys += [k for k in part if k not in keys]
        cols = {}
        for i, p in enumerate(plans):
            name = p.record["kv_dtype"] if len(plans) > 1 else "value"
            if name in cols:
                name = f"{name}#{i}"
            cols[name] = [fmt_value(k, p.record.get(k)) for k in keys]
        out.append((title, pd.DataFrame({"field": keys, **cols})))
    return out
