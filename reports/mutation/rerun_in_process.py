"""Re-run mutants against argument-free test functions in one process (fast: lcprof imported once).

    cd WORK_DIR/mutants && PYTHONPATH=$PWD python3 .../rerun_in_process.py NAMES_FILE tests/cost/test_x.py ...

mutmut 3's trampoline reads MUTANT_UNDER_TEST at every call, so each mutant is switched on by setting
it before calling the tests; a mutant is killed when any test raises. Parametrized tests and tests
that take fixtures are skipped (run those through pytest: rerun_cost_survivors.py)."""
import importlib.util
import inspect
import os
import sys

names = open(sys.argv[1]).read().split()
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
tests = []
for path in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tests += [f for k, f in vars(mod).items() if k.startswith("test_") and callable(f)
              and not inspect.signature(f).parameters and not hasattr(f, "pytestmark")]
for name in names:
    os.environ["MUTANT_UNDER_TEST"] = name
    killed_by = None
    for t in tests:
        try:
            t()
        except BaseException as exc:  # noqa: BLE001 - any failure kills the mutant
            killed_by = f"{t.__name__}: {type(exc).__name__}"
            break
    print("killed" if killed_by else "survived", name, killed_by or "", flush=True)
os.environ["MUTANT_UNDER_TEST"] = ""
