#!/usr/bin/env python3
"""How fast the analytic commands answer, from process start to exit, and what they import.

    python3 bench/cli_speed.py [--repeats 15] [--out reports/cli-speed/cli_speed.txt]

For each analytic command: wall time of ``python -m lcprof ...`` over repeated runs (the runs of all
commands interleaved, so a change in the machine's load spreads over all of them), next to the
interpreter's own floor (``python -c pass``) and to importing numpy and click, which every command
needs; then ``python -X importtime`` once per command: the heavy modules that must stay off the
path (pandas, torch, matplotlib, scipy, tabulate) and the largest imports.

Bytecode is cached (in a folder of its own, PYTHONPYCACHEPREFIX) as an installed package has it;
this machine sets PYTHONDONTWRITEBYTECODE, which would otherwise recompile every module on every run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL = tempfile.gettempdir()
TARGET_S = 0.3
HEAVY = ("pandas", "torch", "matplotlib", "scipy", "tabulate")

COMMANDS = [
    ["models"],
    ["gpus"],
    ["show", "phi3-128k"],
    ["kv", "--model", "llama3-70b", "--n", "8k,32k,128k,1M"],
    ["flops", "--model", "mistral-7b", "--n", "4k..128k"],
    ["rope", "--model", "phi3-128k", "--n", "128k"],
    ["diff", "phi3-4k", "phi3-128k"],
    ["layer", "--model", "phi3-128k", "--n", "131072"],
    ["ring", "--model", "llama3-8b", "--n", "1M", "--gpus", "8"],
]
BASELINES = {"python -c pass": ["-c", "pass"], "import numpy, click": ["-c", "import numpy, click"]}


def wall(argv: list[str], env) -> float:
    t0 = time.perf_counter()
    # cwd is a neutral folder: `python -m` puts the cwd first on sys.path, PYTHONPATH must decide the tree
    p = subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=NEUTRAL)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv} failed: {p.stderr.decode()[-500:]}")
    return dt


def imports(argv: list[str], env) -> tuple[set[str], list[tuple[int, str]], int]:
    """(top-level packages imported, largest cumulative imports (us, name), total us) of one run."""
    p = subprocess.run([sys.executable, "-X", "importtime", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=env, cwd=NEUTRAL, text=True)
    rows = []
    for ln in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", ln)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
    tops = {name.split(".")[0] for _, _, name in rows}
    top_level = sorted(((us, name) for us, depth, name in rows if depth == 1), reverse=True)
    return tops, top_level[:6], sum(us for us, depth, _ in rows if depth == 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=None)
    ap.add_argument("--baseline-tree", default=None,
                    help="another lcprof checkout (e.g. the main branch) timed in the same rounds, for comparison")
    a = ap.parse_args()
    # bytecode goes to a cache folder of its own (PYTHONPYCACHEPREFIX): written by the warm-up runs,
    # read by the timed ones, and no file is added to a checkout
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(Path(NEUTRAL) / "lcprof-bench-pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runs = {**{k: v for k, v in BASELINES.items()}, **{"lcprof " + " ".join(c): ["-m", "lcprof", *c] for c in COMMANDS}}
    envs = {k: env for k in runs}
    if a.baseline_tree:
        tree = Path(a.baseline_tree).resolve()
        benv = {**env, "PYTHONPATH": str(tree)}
        for c in COMMANDS:
            if c[0] != "gpus":  # a new command
                name = f"[{tree.name}] lcprof " + " ".join(c)
                runs[name], envs[name] = ["-m", "lcprof", *c], benv
    for _ in range(2):  # write the bytecode cache, warm the page cache
        for name, argv in runs.items():
            wall(argv, envs[name])
    load0 = os.getloadavg()[0]
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(a.repeats):
        for name, argv in runs.items():
            samples[name].append(wall(argv, envs[name]))
    load1 = os.getloadavg()[0]
    base = statistics.median(samples["import numpy, click"])
    lines = [f"lcprof analytic commands: wall time from process start to exit, {a.repeats} runs each, interleaved",
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, load average {load0:.2f} at start, "
             f"{load1:.2f} at end; python {sys.version.split()[0]}; target {TARGET_S} s",
             "", f"{'command':<58}{'min_s':>8}{'median_s':>10}{'p90_s':>8}{'over numpy+click':>18}  heavy imports"]
    worst = 0.0
    for name, argv in runs.items():
        xs = sorted(samples[name])
        med = statistics.median(xs)
        p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
        heavy = ""
        is_cmd = "lcprof " in name
        if is_cmd:
            tops, _, _ = imports(argv, envs[name])
            heavy = ",".join(h for h in HEAVY if h in tops) or "none"
            if name.startswith("lcprof"):
                worst = max(worst, med)
        extra = f"{med - base:+.3f}" if is_cmd else ""
        lines.append(f"{name[:57]:<58}{xs[0]:>8.3f}{med:>10.3f}{p90:>8.3f}{extra:>18}  {heavy}")
    lines += ["", f"slowest median of this tree: {worst:.3f} s ({'under' if worst < TARGET_S else 'OVER'} the "
                  f"{TARGET_S} s target at this load)",
              "", "Largest top-level imports of `lcprof layer --model phi3-128k --n 131072` (cumulative, python -X "
                  "importtime, one run):"]
    _, top, total = imports(["-m", "lcprof", "layer", "--model", "phi3-128k", "--n", "131072"], env)
    lines += [f"  {us / 1e3:8.1f} ms  {name}" for us, name in top]
    lines.append(f"  {total / 1e3:8.1f} ms  all top-level imports")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
