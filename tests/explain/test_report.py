"""report: built from the committed small results file; images exist, are non-empty, and are linked."""

import json
import re

import pytest

from lcprof.explain.compare import UnresolvedRowWarning
from lcprof.explain.report import build_report


def _linked_images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_report_from_committed_results(cli, data_dir, tmp_path):
    out = tmp_path / "rep"
    r = cli("report", data_dir / "phi3-cpu-small.csv", "--out", out)
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    links = _linked_images(md)
    assert set(links) == {"time_vs_n.png", "local_exponent.png", "quadratic_share.png", "kv_memory.png"}
    for name in links:
        png = out / name
        assert png.exists() and png.stat().st_size > 5000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(links)
    # provenance: the command line and the environment columns
    assert "lcprof report " in md and "--out" in md
    assert "torch_version" in md and "2.13.0+cpu" in md and "synthetic" in md
    assert "skipped: 2" in md and "phi3-mini-128k eager fp32 cpu" in md


def test_report_with_hardware_and_plan(data_dir, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "plan.md").write_text("| users | n |\n|---|---|\n| 12 | 4096 |\n")
    prof = tmp_path / "cpu.json"
    prof.write_text(json.dumps({"key": "toy-cpu", "name": "Toy CPU", "peak_flops_per_s": {"fp32": 1.5e11},
                                "hbm_bytes_per_s": 3e10, "memory_bytes": 1 << 34}))
    with pytest.warns(UnresolvedRowWarning, match="no bf16 peak rate"):
        rep = build_report([data_dir / "phi3-cpu-small.csv", data_dir / "eight-columns.csv"], out,
                           calibration=prof, target="1M")
    md = rep.markdown_path.read_text()
    assert "ratio.png" in _linked_images(md) and (out / "ratio.png").stat().st_size > 5000
    assert "## Capacity plan" in md and "| 12 | 4096 |" in md
    assert "## Measured vs predicted" in md and "Roofline on calibration" in md and "(Toy CPU)" in md
    # the llama3-8b bf16 rows cannot be predicted on a profile without a bf16 rate: flagged, reported
    assert rep.compare.rows.query("model == 'llama3-8b'")["flagged"].all()
    assert any("bf16" in n for n in rep.notes)
    assert "1048576" in md
    s = rep.summary()
    assert len(s) == 3 and "median_ratio" in s.columns


def test_report_errors(cli, data_dir, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = cli("report", data_dir / "phi3-cpu-small.csv", "--out", f)
    assert r.exit_code == 2 and "is a file" in r.stderr
    r = cli("report", data_dir / "phi3-cpu-small.csv", "--out", tmp_path / "r", "--plan", tmp_path / "nope.md")
    assert r.exit_code == 2 and "plan" in r.stderr


def test_real_sweep_output_is_understood(data_dir, tmp_path):
    """A file written by `lcprof sweep` (real, noisy CPU run with the measure module's extra columns)."""
    from lcprof.explain.fit import env_columns, read_results
    from lcprof.hardware import load_calibration

    df = read_results(data_dir / "phi3-cpu-sweep.csv")
    env = env_columns(df)
    assert {"torch_version", "cpu_model", "threads", "lcprof_version", "gpu_name"} <= set(env)
    assert not {"time_stdev_s", "samples_s", "window", "achieved_flops_per_s"} & set(env)
    h100 = load_calibration(data_dir / "h100-calibration.json")  # a real profile from `lcprof calibrate`
    assert 3e14 < h100.peak("bf16") < 1e15 and 2e12 < h100.hbm_bytes_per_s < 4e12
    prof = tmp_path / "cpu.json"
    prof.write_text(json.dumps({"key": "cpu", "name": "CPU", "peak_flops_per_s": {"fp32": 1.5e11},
                                "hbm_bytes_per_s": 3e10, "memory_bytes": 1 << 34}))
    rep = build_report(data_dir / "phi3-cpu-sweep.csv", tmp_path / "rep", calibration=prof)
    assert len(rep.fit.groups) == 2 and len(rep.compare.rows) == 10
    assert all(p.stat().st_size > 5000 for p in rep.images.values())


def test_report_holds_a_calibrated_attention_rate_and_says_so(data_dir, tmp_path):
    """A CPU profile with an sdpa attention rate: the report's fit holds it for the sdpa group (its
    attention rate is the profile's), leaves eager's fitted, and the summary names the held rate."""
    prof = tmp_path / "cpu.json"
    prof.write_text(json.dumps({"key": "cpu", "name": "CPU", "device": "cpu", "peak_flops_per_s": {"fp32": 1.5e11},
                                "hbm_bytes_per_s": 3e10, "memory_bytes": 1 << 34,
                                "attention_flops_per_s": {"sdpa": {"fp32": 2.5e10}}}))
    rep = build_report(data_dir / "phi3-cpu-sweep.csv", tmp_path / "rep", calibration=prof)
    by = {g.key["backend"]: g.model for g in rep.fit.groups}
    assert by["sdpa"].kind == "cost model, attention rate held" and by["sdpa"].rate("attention") == 2.5e10
    assert by["eager"].kind == "cost model"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Extrapolations hold the calibration's attention rate" in md and "at 0.025 TFLOP/s" in md


def test_environment_values_are_summarised_to_fit_the_page():
    from lcprof.explain.report import ENV_VALUES_LISTED, _env_value

    assert ENV_VALUES_LISTED == 3
    assert _env_value("gpu_name", []) == "(empty)"
    assert _env_value("threads", [2, 4, 8]) == "2, 4, 8"  # three: listed
    stamps = [f"2026-12-02T07:5{i}:00+00:00" for i in (3, 1, 2, 0)]
    assert _env_value("timestamp", stamps) == "2026-12-02T07:50:00+00:00 to 2026-12-02T07:53:00+00:00 (4 distinct)"
    assert _env_value("load_avg_1m", [0.5, 2.25, 1.0, 0.125]) == "0.125 to 2.25 (4 distinct)"
    assert _env_value("cpu_model", ["a", "b", "c", "d", "e"]) == "a, b, c, ... (5 distinct)"
