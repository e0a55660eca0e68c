#!/usr/bin/env bash
# Mutation run on lcprof/cost/ (mutmut 3.8) with the cost-model tests, on a seeded sample of the mutants.
#
#   reports/mutation/run_cost_mutation.sh [SAMPLE_SIZE] [SEED] [WORK_DIR]
#   ONLY=weights reports/mutation/run_cost_mutation.sh 60 2026   # a sample of weights.py alone, with the
#                                                               # tests that own it (tests/plan/test_weights.py ...)
#
# Works in a scratch copy (the repository is not touched): appends a [tool.mutmut] section to the
# copy's pyproject.toml, lets mutmut generate every mutant of lcprof/cost/ and lcprof/cost/kinds/
# (weights.py -- the engine tensor list, owned and mutation-tested with the planner -- and the
# re-exporting __init__.py of cost/ excluded), then runs the sampled ones with the CPU cost tests
# (tests/cost/ and the analytic ring tests; the torch ring tests are ignored) and prints one
# line per mutant (killed / survived). mutmut runs only the tests that reach the mutated function.
# Needs `pip install mutmut` (3.8.1 used). About 3 s per killed mutant, 20-60 s per survivor, on 2 cores.
set -euo pipefail
SAMPLE=${1:-300}
SEED=${2:-2026}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${3:-$(mktemp -d)}
mkdir -p "$WORK"
cd "$ROOT"
git ls-files -z | xargs -0 -I{} cp --parents {} "$WORK/"
cd "$WORK"
if [ "${ONLY:-}" = "weights" ]; then
    SKIP=$(cd lcprof/cost && ls *.py kinds/*.py | grep -v '^weights.py$' | sed 's|^|"lcprof/cost/|; s|$|"|' | paste -sd,)
    TESTS='"tests/plan/test_weights.py", "tests/cost/test_presets.py", "tests/plan/test_plan.py", "tests/cost/"'
else
    SKIP='"lcprof/cost/weights.py", "lcprof/cost/__init__.py"'
    TESTS='"tests/cost/", "tests/ring/"'
fi
cat >> pyproject.toml <<CFG

[tool.mutmut]
source_paths = ["lcprof/cost/"]
do_not_mutate = [$SKIP]
pytest_add_cli_args_test_selection = [$TESTS]
also_copy = ["lcprof/", "tests/", "reports/h100-calibration-2026-11-22/"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not gpu",
                       "--ignore=tests/ring/test_ring_block_merge.py", "--ignore=tests/ring/test_ring_composed.py",
                       "--ignore=tests/ring/test_ring_distributed.py", "--ignore=tests/ring/test_ring_gpu.py",
                       "--ignore=tests/ring/test_ring_partition.py", "--ignore=tests/ring/test_ring_simulated.py",
                       "--ignore=tests/ring/test_kernel_bench_cpu.py"]
CFG
# generate the mutants (and the test-coverage stats) by running one named mutant
FIRST=lcprof.cost.rope.x_base_inv_freq__mutmut_1
[ "${ONLY:-}" = "weights" ] && FIRST=lcprof.cost.weights.x_padded_vocab__mutmut_1
nice mutmut run --max-children 2 $FIRST > gen.log 2>&1 || true
python3 - "$SAMPLE" "$SEED" "${ONLY:-}" > sample.txt <<'PY'
import glob, json, random, sys
names = []
for f in sorted(glob.glob("mutants/lcprof/cost/**/*.meta", recursive=True)):
    if (sys.argv[3] == "weights") != f.endswith("weights.py.meta") or f.endswith("cost/__init__.py.meta"):
        continue
    names += list(json.load(open(f))["exit_code_by_key"])
print(len(names), file=sys.stderr)
random.seed(int(sys.argv[2]))
print("\n".join(random.sample(sorted(names), min(int(sys.argv[1]), len(names)))))
PY
nice mutmut run --max-children 2 $(cat sample.txt) > run.log 2>&1 || true
python3 - <<'PY'
import glob, json
codes = {}
for f in glob.glob("mutants/lcprof/cost/**/*.meta", recursive=True):
    codes.update(json.load(open(f))["exit_code_by_key"])
for n in open("sample.txt").read().split():
    code = codes.get(n)
    print({1: "killed", 0: "survived"}.get(code, f"exit {code}"), n)
PY
echo "scratch copy: $WORK (mutmut show NAME there for a diff)"
