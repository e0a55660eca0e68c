"""Results tables on disk and the CLI run in-process (the explain tests)."""

from pathlib import Path

import pandas as pd

#: tests/data: committed results files, calibration profiles and configs.
DATA = Path(__file__).resolve().parents[1] / "data"


def write_results(records, path) -> Path:
    """Write ``records`` (a list of dicts, or a DataFrame) as a results CSV at ``path``."""
    path = Path(path)
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def run_cli(*args):
    """Run ``lcprof ARGS`` in-process; the click Result (stdout and stderr kept apart)."""
    from click.testing import CliRunner

    from lcprof.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])
