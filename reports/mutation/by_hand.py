"""Apply by-hand textual mutants one at a time, run the owning tests, restore the source.

``run(mutants, tests)``: ``mutants`` is a list of (path, old, new) with ``old`` occurring exactly once in
the file; ``tests(path)`` the pytest arguments for a mutant of ``path`` (a list), or several such lists run in
turn (the mutant is killed by the first that fails). Prints one line per mutant and
returns the number killed. It edits sources in place: run nothing else in the checkout meanwhile."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(mutants, tests) -> int:
    killed = 0
    for path, old, new in mutants:
        f = ROOT / path
        src = f.read_text()
        if src.count(old) != 1:
            print("MISSING OR AMBIGUOUS", path, old)
            continue
        f.write_text(src.replace(old, new, 1))
        runs = tests(path)
        runs = runs if runs and isinstance(runs[0], list) else [runs]
        try:
            dead = False
            for args in runs:
                r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                                   cwd=ROOT, capture_output=True, text=True)
                if r.returncode != 0:
                    dead = True
                    break
        finally:
            f.write_text(src)
        killed += dead
        print("killed" if dead else "SURVIVED", path, repr(new)[:80], flush=True)
    print(f"{killed}/{len(mutants)} killed")
    return killed
