"""Fixtures of the explain tests (fit, compare, report, calibrate); helpers in ``support.results_files``."""

import pytest

from support.results_files import DATA, run_cli, write_results as _write_results


@pytest.fixture
def data_dir():
    return DATA


@pytest.fixture
def write_results(tmp_path):
    """Write records to a CSV in tmp_path and return its path."""
    def _write(records, name="results.csv"):
        return _write_results(records, tmp_path / name)
    return _write


@pytest.fixture
def cli():
    """Run `lcprof ARGS` in-process; returns the click Result (stdout and stderr kept apart)."""
    return run_cli
