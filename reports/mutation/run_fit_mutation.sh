#!/usr/bin/env bash
# Mutation run on lcprof/explain/fit.py (mutmut 3.8) with the explain tests, on a seeded sample of the mutants.
#
#   reports/mutation/run_fit_mutation.sh [SAMPLE_SIZE] [SEED] [WORK_DIR]
#   FILTER='regex' reports/mutation/run_fit_mutation.sh 60 7   # sample only mutant names matching it
#   NAMES='m1 m2 ...' reports/mutation/run_fit_mutation.sh      # run exactly these mutants (a re-run)
#
# Works in a scratch copy (the repository is not touched): appends a [tool.mutmut] section to the
# copy's pyproject.toml, lets mutmut generate every mutant of lcprof/explain/fit.py (the other files
# of lcprof/explain/ -- compare, compare_model, report, plotting, __init__ -- are copied unmutated),
# then runs the sampled ones with the tests of tests/explain/ that are about fitting (the report,
# its headless-browser check and the CPU calibration run are left out: 10-25 s each and not about
# fit) and prints one line per mutant (killed / survived). mutmut runs only the tests that reach
# the mutated function.
# Needs `pip install mutmut` (3.8.1 used). About 2-4 s per killed mutant, 10-30 s per survivor, on 2 cores.
set -euo pipefail
SAMPLE=${1:-150}
SEED=${2:-2026}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${3:-$(mktemp -d)}
mkdir -p "$WORK"
cd "$ROOT"
git ls-files -z | xargs -0 -I{} cp --parents {} "$WORK/"
# new, not yet committed test files travel too
git ls-files -z --others --exclude-standard tests/ | xargs -0 -r -I{} cp --parents {} "$WORK/"
cd "$WORK"
cat >> pyproject.toml <<'CFG'

[tool.mutmut]
source_paths = ["lcprof/explain/"]
do_not_mutate = ["lcprof/explain/__init__.py", "lcprof/explain/compare.py", "lcprof/explain/compare_model.py",
                 "lcprof/explain/report.py", "lcprof/explain/plotting.py"]
pytest_add_cli_args_test_selection = ["tests/explain/"]
also_copy = ["lcprof/", "tests/", "reports/h100-measure/", "reports/h100-calibration-2026-11-22/"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not gpu",
                       "--ignore=tests/explain/test_report.py", "--ignore=tests/explain/test_report_browser.py",
                       "--ignore=tests/explain/test_calibrate.py"]
CFG
# generate the mutants (and the test-coverage stats) by running one named mutant
nice mutmut run --max-children 2 lcprof.explain.fit.x__as_tokens__mutmut_1 > gen.log 2>&1 || true
if [ -n "${NAMES:-}" ]; then
    echo $NAMES | tr ' ' '\n' > sample.txt
else
python3 - "$SAMPLE" "$SEED" > sample.txt <<'PY'
import json, os, random, re, sys
names = sorted(json.load(open("mutants/lcprof/explain/fit.py.meta"))["exit_code_by_key"])
pattern = os.environ.get("FILTER")
if pattern:
    names = [n for n in names if re.search(pattern, n)]
print(len(names), "mutants generated", file=sys.stderr)
random.seed(int(sys.argv[2]))
print("\n".join(random.sample(names, min(int(sys.argv[1]), len(names)))))
PY
fi
nice mutmut run --max-children 2 $(cat sample.txt) > run.log 2>&1 || true
python3 - <<'PY'
import json
codes = json.load(open("mutants/lcprof/explain/fit.py.meta"))["exit_code_by_key"]
for n in open("sample.txt").read().split():
    code = codes.get(n)
    print({1: "killed", 0: "survived"}.get(code, f"exit {code}"), n)
PY
echo "scratch copy: $WORK (mutmut show NAME there for a diff)"
