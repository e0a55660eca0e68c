"""The Hopper path compiles for sm_90a into the instructions a wgmma/TMA kernel must use.

Without a GPU this is what can be checked: nvcc builds every ``striped_attn_sm90_d*.cu`` for
sm_90a; ptxas reports no spill and no stack frame for any of its kernels, and none of the
warnings that mean the wgmma pipeline was serialized or setmaxnreg ignored; the SASS holds
HGMMA (wgmma), UTMALDG (TMA loads) and USETMAXREG, and no local-memory traffic. Skips when nvcc,
cuobjdump or nvdisasm is missing. Also: the generated wgmma wrappers are up to date.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "kernels"))

import check_sm90  # noqa: E402


def test_wgmma_wrappers_match_generator():
    proc = subprocess.run([sys.executable, str(ROOT / "kernels" / "tools" / "gen_sm90_wgmma.py"), "--check"])
    assert proc.returncode == 0, "kernels/csrc/sm90_wgmma.inc is stale: run kernels/tools/gen_sm90_wgmma.py"


def test_ptxas_and_sass_parsers_catch_problems():
    log = ("ptxas info    : Function properties for k\n    0 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n"
           "ptxas info    : (C7519) warpgroup.arrive is injected\n")
    kernels, problems = check_sm90.check_ptxas(log)
    assert kernels == 1 and len(problems) == 2
    counts, problems = check_sm90.check_sass("  HGMMA.64x128x16.F32.BF16 R0\n  STL [R1], R2 ;\n")
    assert counts["HGMMA"] == 1 and counts["STL"] == 1
    assert {p.split()[1] for p in problems} == {"UTMALDG", "USETMAXREG", "STL"}


@pytest.mark.skipif(check_sm90.find_tool("nvcc") is None, reason="nvcc not found")
def test_sm90_sources_compile_to_wgmma_and_tma_without_spills():
    if check_sm90.find_tool("cuobjdump") is None or check_sm90.find_tool("nvdisasm") is None:
        pytest.skip("cuobjdump/nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    results = check_sm90.run_checks(jobs=2)
    assert {r.source for r in results} == {"striped_attn_sm90_d64.cu", "striped_attn_sm90_d96.cu",
                                           "striped_attn_sm90_d128.cu"}
    for r in results:
        assert not r.problems, (r.source, r.problems)
        assert r.kernels == 6  # bf16 and fp16 x three pipelines
        assert r.sass_counts["HGMMA"] > 0 and r.sass_counts["UTMALDG"] > 0
