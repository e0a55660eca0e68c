"""The README's two newcomer commands stay true: CI runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- newcomer-commands -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README must keep the newcomer commands in the marked code block"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_gives_exactly_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    assert "bench.sh" in cmds[0] and "torch==2.13.0" in cmds[0]
    assert "pytest" in cmds[1] and "torch==2.13.0" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in [ln.strip() for ln in ci]


def test_bench_and_ci_are_executable_scripts():
    for p in (ROOT / "bench.sh", ROOT / ".ci" / "run"):
        assert p.read_text().startswith("#!/usr/bin/env bash")


def test_readme_counts_the_committed_published_configs():
    """The README's count of published configs checked against transformers is the number committed."""
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"config \((\d+) of them, each with its provenance", text)
    assert m, "README must state how many published configs are committed"
    assert int(m.group(1)) == sum(1 for p in (ROOT / "tests" / "data" / "configs").iterdir() if p.is_dir())
