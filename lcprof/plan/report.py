"""``--report DIR``: a Markdown capacity report with three plots (matplotlib, Agg backend). No torch.

Files written: ``README.md`` (the report, with the command line that produced it), ``plan.json``
(the flat records), ``concurrency_vs_context.png``, ``displacement_vs_long.png``,
``ttft_vs_chunk.png``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from lcprof._version import __version__
from lcprof.plan.capacity import CapacityPlan, concurrency
from lcprof.plan.compute import chunk_wait_s, chunked_prefill_s, last_chunk_s, prefill_s
from lcprof.plan.kvformat import kv_format
from lcprof.plan.memory import memory_stage
from lcprof.plan.render import fmt_value, section_frames
from lcprof.explain.plotting import figure, finish
from lcprof.render import records
from lcprof.units import fmt_tokens

#: KV dtypes always drawn in the concurrency plot, besides the plans' own.
PLOT_KV_DTYPES = ("bf16", "fp8")


def _doubling(lo: int, hi: int) -> np.ndarray:
    out = [lo]
    while out[-1] * 2 <= hi:
        out.append(out[-1] * 2)
    if out[-1] != hi:
        out.append(hi)
    return np.asarray(out, dtype=np.int64)


def concurrency_curve(p: CapacityPlan, kv_dtype: str, ns) -> np.ndarray:
    """Max concurrent requests of context n on one KV pool, with the plan's deployment and this KV
    dtype (the memory stage re-run; capped at the engine's max_num_seqs)."""
    dep, work = p.deployment, p.workload
    prec = dataclasses.replace(dep.precision, kv=kv_format(dep.spec, kv_dtype, dep.engine))
    d = dataclasses.replace(dep, precision=prec)
    mem = memory_stage(dep.spec, d, work.longest - work.prefix_n)
    pool = mem.kv_pool_blocks - p.record["shared_prefix_blocks"]
    return concurrency(pool, mem.layout.blocks_per_request(ns, work.prefix_n), mem.max_num_seqs)


def displacement_curves(p: CapacityPlan, longs) -> tuple[np.ndarray, np.ndarray]:
    """(displacement_kv, displacement_prefill) of a long request of each length against the plan's short
    one (unchunked prefill times)."""
    dep, work, lay = p.deployment, p.workload, p.memory.layout
    pre = work.prefix_n
    longs = np.asarray(longs, dtype=np.int64)
    b = lay.blocks_per_request(longs, pre) / lay.blocks_per_request([work.short_n], pre)[0]
    t = prefill_s(dep, longs - pre, pre)
    t0 = prefill_s(dep, [work.short_n - pre], pre)[0]
    return b, t / t0


def ttft_chunk_curve(p: CapacityPlan, chunks) -> np.ndarray:
    """TTFT of a short request behind one long prefill, for each chunk size (seconds)."""
    dep, work = p.deployment, p.workload
    pre = work.prefix_n
    chunks = np.asarray(chunks, dtype=np.int64)
    wait = np.array([chunk_wait_s(dep, x) for x in last_chunk_s(dep, work.long_n - pre, chunks)])
    own = np.array([chunked_prefill_s(dep, work.short_n - pre, int(c), pre)[0] for c in chunks])
    return wait + own


def _plots(ps: list[CapacityPlan], out: Path) -> dict[str, str]:
    p = ps[0]
    r = p.record
    spec_name, long_n, short_n = r["model"], r["long_n"], r["short_n"]
    files = {}

    # 1. concurrency vs context length, one line per KV dtype
    hi = max(4 * long_n, 1 << 17)
    ns = _doubling(1024, hi)
    fig, ax = figure(6.4, 4.2)
    dtypes = list(dict.fromkeys([q.record["kv_dtype"] for q in ps] + list(PLOT_KV_DTYPES)))
    for d in dtypes:
        c = concurrency_curve(p, d, ns)
        ax.plot(ns, np.where(c > 0, c, np.nan), marker="o", ms=3, label=f"{d} KV")
    ax.axvline(long_n, color="grey", ls=":", lw=1)
    ax.axvline(short_n, color="grey", ls=":", lw=1)
    files["concurrency"] = "concurrency_vs_context.png"
    finish(fig, ax, out / files["concurrency"], xlabel="context length per request (tokens)",
           ylabel="max concurrent requests per replica",
           title=f"{spec_name}: {r['gpus']}x {r['gpu']}, TP {r['tp']} - concurrency vs context")

    # 2. displacement vs long length
    longs = _doubling(short_n, max(4 * long_n, 1 << 20))
    d_kv, d_pf = displacement_curves(p, longs)
    fig, ax = figure(6.4, 4.2)
    ax.plot(longs, d_kv, marker="o", ms=3, label="displacement_kv (KV blocks)")
    ax.plot(longs, d_pf, marker="s", ms=3, label="displacement_prefill (prefill time)")
    ax.plot(longs, longs / short_n, color="grey", ls="--", lw=1, label="linear (long / short tokens)")
    ax.axvline(long_n, color="grey", ls=":", lw=1)
    files["displacement"] = "displacement_vs_long.png"
    finish(fig, ax, out / files["displacement"], xlabel="long request length (tokens)",
           ylabel=f"x one {fmt_tokens(short_n)} request", title=f"{spec_name}: what one long request displaces")

    # 3. TTFT inflation vs chunk size
    chunks = _doubling(256, long_n - r["prefix_n"])
    ttft = ttft_chunk_curve(p, chunks)
    alone = r["ttft_short_alone_s"]
    fig, ax = figure(6.4, 4.2)
    ax.plot(chunks, ttft / alone, marker="o", ms=3, label="chunked prefill (wait <= one chunk)")
    ax.axhline(r["ttft_short_behind_long_unchunked_s"] / alone, color="C3", ls="--", lw=1,
               label="no chunking (wait for the whole prefill)")
    if r.get("ttft_target_s"):
        ax.axhline(r["ttft_target_s"] / alone, color="C2", ls=":", lw=1, label="TTFT target")
    files["ttft"] = "ttft_vs_chunk.png"
    finish(fig, ax, out / files["ttft"], xlabel="chunk size (tokens)",
           ylabel=f"TTFT of a {fmt_tokens(short_n)} request / its TTFT alone",
           title=f"{spec_name}: short TTFT behind one {fmt_tokens(long_n)} prefill", fontsize=8)
    return files


def _md_table(frame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _layout(r: dict) -> str:
    parts = [f"TP {r['tp']}"] + [f"{k.upper()} {r[k]}" for k in ("dp", "ep", "pp") if r.get(k, 1) > 1]
    return ", ".join(parts)


def write_report(ps, directory, *, command: str | None = None) -> Path:
    """Write the report for one plan or a list of plans (e.g. one per KV dtype); returns README.md's path."""
    if isinstance(ps, CapacityPlan):
        ps = [ps]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = _plots(ps, out)
    r = ps[0].record
    with open(out / "plan.json", "w") as fh:
        json.dump(records([p.json_record() for p in ps]), fh, indent=1)
        fh.write("\n")

    lines = [f"# Capacity plan: {r['model']} on {r['gpus']}x {r['gpu']} ({_layout(r)}, {r['engine']}), "
             f"{fmt_tokens(r['long_n'])} vs {fmt_tokens(r['short_n'])}", ""]
    if command:
        lines += ["Produced by (lcprof " + __version__ + "):", "", "```", command, "```", ""]
    lines += [f"Times: {r['rates_source']}; attention at {r['attention_rate']}. Raw records: [plan.json](plan.json).",
              ""]
    warned = list(dict.fromkeys(w for p in ps for w in p.warnings))
    if warned:
        lines += ["Warnings:", ""] + [f"- {w}" for w in warned] + [""]
    for p in ps:
        if p.startup_log:
            per = " (each of the DP ranks' engine cores)" if p.record.get("dp", 1) > 1 else ""
            lines += [f"What {r['engine']} would log at startup{per} ({p.record['kv_dtype']} KV):", "", "```"]
            lines += list(p.startup_log) + ["```", ""]
    lines += ["## Headline", ""]
    for p in ps:
        q = p.record
        chunked = q.get("chunked")
        lines.append(
            f"- **{q['kv_dtype']} KV**: one KV pool holds {q['max_concurrent_short']} concurrent "
            f"{fmt_tokens(q['short_n'])} requests or {q['max_concurrent_long']} of {fmt_tokens(q['long_n'])} "
            f"(deployment: {q['max_concurrent_short_deployment']} / {q['max_concurrent_long_deployment']}). "
            f"One {fmt_tokens(q['long_n'])} request displaces **{q['displacement_kv']:.3g}** short requests' KV "
            f"(costs {q['short_requests_lost_per_long']} slots) and **{q['displacement_prefill']:.3g}** short "
            f"prefills of compute; a short request behind it waits {fmt_value('x_s', q['ttft_short_behind_long_s'])}"
            + (f" with {fmt_tokens(q['max_num_batched_tokens'])}-token chunked prefill "
               f"({fmt_value('x_s', q['ttft_short_behind_long_unchunked_s'])} unchunked)" if chunked else "") + "."
            + (f" Each request also holds {fmt_value('x_bytes', q['state_bytes_per_request_per_gpu'])} of mixer "
               f"state per GPU (one block in each of its {q['state_pages_per_request']} state groups), whatever its "
               "length." if q.get("state_pages_per_request") else ""))
    lines.append("")
    for title, frame in section_frames(ps):
        lines += [f"## {title}", "", _md_table(frame), ""]
    lines += ["## KV blocks per request by KV group", "", _md_table(ps[0].groups), ""]
    if ps[0].mix is not None:
        lines += ["## Mix", "", _md_table(ps[0].mix), ""]
    lines += ["## Decode time per token vs resident context", "",
              "`decode_step_batch1_s`: one request alone; `tpot_full_pool_s`: the KV pool full of requests of "
              "that context.", "", _md_table(ps[0].decode.round(6)), ""]
    lines += ["## Plots", "",
              f"![concurrency vs context]({files['concurrency']})", "",
              f"![displacement vs long length]({files['displacement']})", "",
              f"![TTFT inflation vs chunk size]({files['ttft']})", ""]
    lines += ["## Conventions", ""] + [f"- {n}" for n in ps[0].notes] + [""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
