"""A results file's integer keys are checked as they are read: a negative, fractional or
past-2**53 n, batch or layer is refused with one line naming the column and row."""

import pandas as pd
import pytest

from lcprof.errors import LcprofError
from lcprof.results import MAX_INT_KEY, read_results


def _row(**kw):
    rec = {"model": "phi3-mini-128k", "backend": "sdpa", "dtype": "fp32", "device": "cpu", "batch": 1, "n": 512,
           "layer": 0, "time_s": 0.01, "status": "ok"}
    rec.update(kw)
    return rec


@pytest.mark.parametrize("col,value", [("n", -512), ("n", 0), ("n", 2 ** 63), ("n", 12.5), ("batch", 0),
                                       ("batch", -1), ("layer", -3), ("n", MAX_INT_KEY + 2)])
def test_a_bad_integer_key_is_refused_naming_column_and_row(tmp_path, col, value):
    path = tmp_path / "r.csv"
    pd.DataFrame([_row(), _row(**{col: value})]).to_csv(path, index=False)
    with pytest.raises(LcprofError, match=rf"column '{col}' holds '.*' in row 2; it must be a whole number"):
        read_results(path)


def test_the_largest_exact_key_is_kept(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame([_row(n=MAX_INT_KEY), _row(n=1, batch=1, layer=0)]).to_csv(path, index=False)
    df = read_results(path)
    assert list(df["n"]) == [2 ** 53, 1]  # 9007199254740992: float64 still exact here


def test_cli_compare_refuses_a_negative_n_in_one_line(tmp_path, cli):
    path = tmp_path / "r.csv"
    pd.DataFrame([_row(n=-512)]).to_csv(path, index=False)
    res = cli("compare", path, "--gpu", "h100")
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "column 'n' holds '-512' in row 1" in res.stderr


def test_whole_model_results_refuse_a_negative_n(tmp_path):
    from lcprof.explain.compare_model import read_model_results

    df = pd.DataFrame([dict(_row(n=-4), phase="prefill", target="model")])
    with pytest.raises(LcprofError, match=r"column 'n' holds '-4' in row 1"):
        read_model_results(df)
