#!/usr/bin/env python3
"""Check the Hopper path's machine code without a GPU: compile each sm90 source for sm_90a
and assert what a fast wgmma/TMA kernel must show.

For every ``kernels/csrc/striped_attn_sm90_d*.cu``:

- ``nvcc -Xptxas -v`` reports 0 bytes of spill stores, spill loads and stack frame for every
  kernel (a spilled accumulator goes through local memory, far slower);
- ptxas gives none of the warnings that mean the pipeline did not come out as written:
  wgmma serialized (C7510), a warpgroup.arrive injected (C7519), setmaxnreg ignored (C7508);
- the SASS (``cuobjdump -sass``, which needs ``nvdisasm``) contains ``HGMMA`` (wgmma),
  ``UTMALDG`` (TMA tensor loads), ``USETMAXREG`` (register reallocation) and no
  ``LDL``/``STL`` (local memory).

Usage: ``python3 kernels/check_sm90.py [--nvcc PATH]`` (exit 1 on a failed check, 2 when a tool
is missing). cuobjdump and nvdisasm come with a full CUDA toolkit, or from PyPI
(``nvidia-cuda-cuobjdump``, ``nvidia-cuda-nvdisasm``); they are looked for on PATH, in
``$CUDA_HOME/bin`` and in those packages. Imports nothing outside the standard library.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
NVCC_FLAGS = ("-std=c++17", "-O3", "--use_fast_math", "-gencode=arch=compute_90a,code=sm_90a", "-Xptxas", "-v")
# ptxas warnings that say the wgmma pipeline or the register split did not come out as written
BAD_PTXAS = {
    "C7510": "wgmma serialized",
    "C7519": "warpgroup.arrive injected by the compiler",
    "C7508": "setmaxnreg ignored",
}
REQUIRED_SASS = {"HGMMA": "wgmma", "UTMALDG": "TMA tensor load", "USETMAXREG": "setmaxnreg"}
FORBIDDEN_SASS = {"LDL": "local-memory load", "STL": "local-memory store"}


def sm90_sources() -> list[Path]:
    return sorted(CSRC.glob("striped_attn_sm90_d*.cu"))


def find_tool(name: str) -> str | None:
    """``name`` on PATH, in $CUDA_HOME/bin, or in the nvidia-* PyPI packages' bin folders."""
    found = shutil.which(name)
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    for root in roots:
        if root and (Path(root) / "bin" / name).is_file():
            return str(Path(root) / "bin" / name)
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        for base in getattr(nvidia, "__path__", []):
            for cand in sorted(Path(base).glob(f"*/bin/{name}")):
                if os.access(cand, os.X_OK):
                    return str(cand)
    except ImportError:
        pass
    return None


@dataclass
class Result:
    source: str
    problems: list[str] = field(default_factory=list)
    kernels: int = 0
    sass_counts: dict = field(default_factory=dict)
    ptxas_log: str = ""


def check_ptxas(log: str) -> tuple[int, list[str]]:
    """(kernels seen, problems) from ``-Xptxas -v`` output."""
    problems = []
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    for frame, stores, loads in frames:
        if (int(frame), int(stores), int(loads)) != (0, 0, 0):
            problems.append(f"stack frame {frame} B, spill stores {stores} B, spill loads {loads} B")
    for code, meaning in BAD_PTXAS.items():
        if code in log:
            problems.append(f"ptxas {code}: {meaning}")
    return len(frames), problems


def check_sass(sass: str) -> tuple[dict, list[str]]:
    counts = {op: len(re.findall(rf"\b{op}\b", sass)) for op in (*REQUIRED_SASS, *FORBIDDEN_SASS)}
    problems = [f"no {op} ({what}) in the SASS" for op, what in REQUIRED_SASS.items() if counts[op] == 0]
    problems += [f"{counts[op]} {op} ({what}) in the SASS" for op, what in FORBIDDEN_SASS.items() if counts[op]]
    return counts, problems


def check_source(src: Path, nvcc: str, cuobjdump: str, workdir: Path) -> Result:
    res = Result(source=src.name)
    obj = workdir / (src.stem + ".o")
    proc = subprocess.run([nvcc, *NVCC_FLAGS, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
    res.ptxas_log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        res.problems.append(f"nvcc failed: {res.ptxas_log.strip().splitlines()[-1:]}")
        return res
    res.kernels, problems = check_ptxas(res.ptxas_log)
    res.problems += problems
    if res.kernels == 0:
        res.problems.append("ptxas reported no kernel")
    env = dict(os.environ)
    nvdisasm = find_tool("nvdisasm")
    if nvdisasm:
        env["NVDISASM_PATH"] = str(Path(nvdisasm).parent)
        env["PATH"] = str(Path(nvdisasm).parent) + os.pathsep + env.get("PATH", "")
    dump = subprocess.run([cuobjdump, "-sass", str(obj)], capture_output=True, text=True, env=env)
    if dump.returncode != 0 or "fatal" in dump.stderr:
        res.problems.append(f"cuobjdump failed: {dump.stderr.strip()[:300]}")
        return res
    res.sass_counts, problems = check_sass(dump.stdout)
    res.problems += problems
    return res


def run_checks(nvcc: str | None = None, jobs: int = 2) -> list[Result]:
    """Compile and check every sm90 source; raises FileNotFoundError when a tool is missing."""
    nvcc = nvcc or find_tool("nvcc")
    cuobjdump = find_tool("cuobjdump")
    if not nvcc:
        raise FileNotFoundError("nvcc not found (PATH, $CUDA_HOME/bin)")
    if not cuobjdump or not find_tool("nvdisasm"):
        raise FileNotFoundError("cuobjdump/nvdisasm not found (CUDA toolkit, or pip install nvidia-cuda-cuobjdump "
                                "nvidia-cuda-nvdisasm)")
    sources = sm90_sources()
    if not sources:
        raise FileNotFoundError(f"no striped_attn_sm90_d*.cu under {CSRC}")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda s: check_source(s, nvcc, cuobjdump, Path(tmp)), sources))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvcc", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        results = run_checks(args.nvcc, args.jobs)
    except FileNotFoundError as exc:
        print(f"check_sm90: {exc}", file=sys.stderr)
        return 2
    failed = False
    for r in results:
        counts = ", ".join(f"{k} {v}" for k, v in r.sass_counts.items())
        status = "ok" if not r.problems else "FAILED"
        print(f"== {r.source}: {status}; {r.kernels} kernels, no spills" if not r.problems else f"== {r.source}: {status}")
        if counts:
            print(f"   SASS: {counts}")
        for p in r.problems:
            print(f"   {p}")
        failed |= bool(r.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
