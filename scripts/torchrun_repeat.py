#!/usr/bin/env python3
"""Run the torchrun test N times in a row; after each run, look for any process it left behind.

    python3 scripts/torchrun_repeat.py [--runs 20] [--out reports/fuzz/torchrun-20.txt]

Every run gets one tag in its environment (LCPROF_TEST_TAG, inherited by torchrun and its ranks,
whatever session they start), so a leaked process is found by its environment in /proc, not by a
name that other people's runs on the same machine share.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/ring/test_cli_ring.py::test_ring_measure_under_torchrun"


def tagged(tag: str) -> list[str]:
    needle = f"LCPROF_TEST_TAG={tag}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        out.append(f"{d.name} {cmd[:200]}")
            except OSError:
                pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    lines = [f"torchrun test x{a.runs}: {TEST}", f"started {time.strftime('%Y-%m-%d %H:%M:%S')}, "
             f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", ""]
    failures = leaks = 0
    for i in range(1, a.runs + 1):
        tag = uuid.uuid4().hex
        env = {**os.environ, "LCPROF_TEST_TAG": tag, "PYTHONPATH": str(ROOT)}
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        dt = time.monotonic() - t0
        time.sleep(1)
        left = tagged(tag)
        failures += p.returncode != 0
        leaks += bool(left)
        verdict = "passed" if p.returncode == 0 else f"FAILED (exit {p.returncode})"
        first = len(lines)
        lines.append(f"run {i:2d}: {verdict:<18} {dt:6.1f} s  load {os.getloadavg()[0]:5.1f}  "
                     f"processes left: {len(left)}")
        if p.returncode != 0:
            lines += ["    " + ln for ln in (p.stdout + p.stderr).strip().splitlines()[-60:]]
        for ln in left:
            lines.append(f"    left: {ln}")
        print("\n".join(lines[first:]), flush=True)
    lines += ["", f"{a.runs} runs: {a.runs - failures} passed, {failures} failed; runs that left a process: {leaks}",
              f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    print(text)
    return 1 if failures or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
