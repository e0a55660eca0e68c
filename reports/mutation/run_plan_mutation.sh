#!/usr/bin/env bash
# Mutation run on lcprof/plan/ with the plan tests (mutmut 3.8), on a seeded sample of the mutants.
#
#   reports/mutation/run_plan_mutation.sh [SAMPLE_SIZE] [SEED]
#   FILTER='regex' reports/mutation/run_plan_mutation.sh 60 7   # sample only mutant names matching it
#
# Works in a scratch copy (the repository is not touched): appends a [tool.mutmut] section to the
# copy's pyproject.toml, lets mutmut generate every mutant of lcprof/plan/ (report.py, render.py,
# fitted.py and __init__.py excluded: display, plotting and re-exports), then runs the sampled ones
# with the tests of tests/plan/ and prints one line per mutant (killed / survived).
# Needs `pip install mutmut` (3.8.1 used). About 2 s per killed mutant, 15-45 s per survivor, on 2 cores.
set -euo pipefail
SAMPLE=${1:-160}
SEED=${2:-2026}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
cd "$ROOT"
git ls-files -z | xargs -0 -I{} cp --parents {} "$WORK/"
cd "$WORK"
cat >> pyproject.toml <<'CFG'

[tool.mutmut]
source_paths = ["lcprof/plan/"]
do_not_mutate = ["lcprof/plan/report.py", "lcprof/plan/render.py", "lcprof/plan/fitted.py", "lcprof/plan/__init__.py"]
tests_dir = ["tests/plan/"]
also_copy = ["lcprof/", "tests/", "reports/h100-calibration-2026-11-22/"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not gpu"]
CFG
# generate the mutants (and the test-coverage stats) by running one named mutant
nice mutmut run --max-children 2 lcprof.plan.parallel.x_parallel_problem__mutmut_1 > /dev/null 2>&1 || true
python3 - "$SAMPLE" "$SEED" > sample.txt <<'PY'
import glob, json, random, sys
import os, re
names = []
for f in sorted(glob.glob("mutants/lcprof/plan/*.meta")):
    names += list(json.load(open(f))["exit_code_by_key"])
pattern = os.environ.get("FILTER")
if pattern:
    names = [n for n in names if re.search(pattern, n)]
random.seed(int(sys.argv[2]))
print("\n".join(random.sample(names, min(int(sys.argv[1]), len(names)))))
PY
nice mutmut run --max-children 2 $(cat sample.txt) > run.log 2>&1 || true
python3 - <<'PY'
import json
for n in open("sample.txt").read().split():
    mod = n.rsplit(".x", 1)[0].replace(".", "/")
    try:
        code = json.load(open(f"mutants/{mod}.py.meta"))["exit_code_by_key"].get(n)
    except FileNotFoundError:  # a method mutant (class in the name)
        code = None
    print({1: "killed", 0: "survived"}.get(code, f"exit {code}"), n)
PY
echo "scratch copy: $WORK (mutmut show NAME there for a diff)"
