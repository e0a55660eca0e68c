"""Shared helpers for the explain tests (fit, compare, report, calibrate)."""

from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def data_dir():
    return DATA


@pytest.fixture
def write_results(tmp_path):
    """Write records to a CSV in tmp_path and return its path."""
    def _write(records, name="results.csv"):
        path = tmp_path / name
        pd.DataFrame(records).to_csv(path, index=False)
        return path
    return _write


@pytest.fixture
def cli():
    """Run `lcprof ARGS` in-process; returns the click Result (stdout and stderr kept apart)."""
    from click.testing import CliRunner

    from lcprof.cli import main

    def _run(*args):
        return CliRunner().invoke(main, [str(a) for a in args])
    return _run
