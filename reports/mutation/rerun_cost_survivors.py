"""Re-run the survivors of a run_cost_mutation.sh sample against the tests that own each function.

    python3 reports/mutation/rerun_cost_survivors.py WORK_DIR [WORKERS] > survivors.txt

For every sampled mutant mutmut did not kill (survived, no covering test, timed out), runs pytest in
WORK_DIR/mutants with MUTANT_UNDER_TEST set (mutmut 3's trampoline switch) on the test files that hold
that function: the activation steps of the mixer kinds against tests/measure/test_mixers.py (LiveBytes,
to the byte), the attention layer's activation steps against tests/measure/test_tensor_audit.py, the
rest against tests/cost/test_cost_mutants.py (added after the sample ran; copy it into
WORK_DIR/mutants/tests/cost first) when they survived the first run's tests, else against
tests/cost/ and the analytic ring tests. Prints "killed NAME" or "survived NAME".
"""
import glob
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

work = sys.argv[1]
codes = {}
for f in glob.glob(f"{work}/mutants/lcprof/cost/**/*.meta", recursive=True):
    codes.update(json.load(open(f))["exit_code_by_key"])
sample = open(f"{work}/sample.txt").read().split()
RING = ["tests/ring/test_ring_cost.py", "tests/ring/test_ring_mla_dims.py", "tests/ring/test_ring_hybrid.py",
        "tests/ring/test_ring_extremes.py"]


def tests_for(name: str) -> list[str]:
    if re.search(r"kinds\.(mamba1|mamba2|deltanet|lightning)\.x_(activation_steps|_rms_peak)|common\.x_gated_norm_steps"
                 r"|kinds\.x_mixer_activation", name):
        return ["tests/measure/test_mixers.py", "-k", "activation"]
    if re.search(r"model\.x_(_attention_steps|_mlp_steps|activation_steps|_attention_heads|activation_bytes)", name):
        return ["tests/measure/test_tensor_audit.py", "-k", "peak or cached_steps"]
    if codes.get(name) == 0:  # survived tests/cost/ and the ring tests already: the tests added since
        return ["tests/cost/test_cost_mutants.py"]
    return ["tests/cost/"] + RING


def run(name: str) -> str:
    env = dict(os.environ, PYTHONPATH=f"{work}/mutants", MUTANT_UNDER_TEST=name)
    try:
        rc = subprocess.run(["nice", sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
                             "not gpu", *tests_for(name)], cwd=f"{work}/mutants", env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    return f"{'killed' if rc == 1 else ('survived' if rc == 0 else f'exit {rc}')} {name}"


todo = [n for n in sample if codes.get(n) != 1]
todo.sort(key=lambda n: tests_for(n)[0].startswith("tests/measure"))  # the cheap CPU tests first
with ThreadPoolExecutor(max_workers=int(sys.argv[2]) if len(sys.argv) > 2 else 1) as pool:
    for line in pool.map(run, todo):
        print(line, flush=True)
