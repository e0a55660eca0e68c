"""calibrate --quick on the CPU writes a profile that load_calibration reads, with positive rates."""

import json

import pytest

from lcprof.errors import LcprofError

from lcprof.hardware import load_calibration


def test_calibrate_quick_cpu(cli, tmp_path):
    out = tmp_path / "profiles" / "cpu.json"
    r = cli("calibrate", "--out", out, "--device", "cpu", "--quick", "--dtype", "fp32,bf16", "--attention-n", "256",
            "--attention-shape", "4,32")
    assert r.exit_code == 0, r.output
    hw = load_calibration(out)
    assert hw.kind == "calibration"
    assert set(hw.peak_flops_per_s) == {"fp32", "bf16"}
    assert all(v > 0 for v in hw.peak_flops_per_s.values())
    assert hw.peak("fp32") > 1e8  # any CPU does more than 0.1 GFLOP/s
    assert hw.hbm_bytes_per_s > 1e8 and hw.memory_bytes > 1 << 28
    raw = json.loads(out.read_text())
    assert raw["environment"]["torch_version"] and raw["method"]["quick"] is True
    mm = raw["method"]["matmul"]["fp32"]
    assert mm["size"] == 1024 and mm["reps"] >= 1 and mm["rounds"] == 2 and len(mm["round_rates"]) == 2
    # the profile keeps the best sustained round, and records the spread of the rounds
    assert hw.peak("fp32") == max(mm["round_rates"])
    assert mm["spread"] == (max(mm["round_rates"]) - min(mm["round_rates"])) / max(mm["round_rates"])
    assert raw["method"]["timer"].startswith("lcprof.measure.timer.measure")
    assert "wrote" in r.stdout
    # the CPU's attention backends, measured on causal (1, 256, 4 heads, 32) inputs:
    # sdpa (tiled, 128 x 128 tiles): 3 tiles not fully masked = 3 * 128^2 pairs; 4 FLOPs per pair per dim
    # eager: the whole 256 x 256 square, whatever the mask
    att = raw["method"]["attention"]
    assert set(att) == {"sdpa/fp32/256", "eager/fp32/256"}
    assert att["sdpa/fp32/256"]["executed_flops"] == 4 * 32 * 4 * 3 * 128 * 128 == 25_165_824
    assert att["eager/fp32/256"]["executed_flops"] == 4 * 32 * 4 * 256 * 256 == 33_554_432
    assert att["eager/fp32/256"]["family"] == "eager" and att["sdpa/fp32/256"]["family"] == "tiled"
    for b in ("sdpa", "eager"):
        a = att[f"{b}/fp32/256"]
        assert hw.attention_rate(b, "fp32", [256])[0] == max(a["round_rates"])
        assert hw.attention_spread[b]["fp32"] == a["spread"]
    assert hw.device == "cpu"


def test_calibrate_rejects_tf32_on_cpu_and_bad_device(cli, tmp_path):
    r = cli("calibrate", "--out", tmp_path / "p.json", "--device", "tpu")
    assert r.exit_code == 2 and "unknown device" in r.stderr
    r = cli("calibrate", "--out", tmp_path / "p.json", "--dtype", "int3")
    assert r.exit_code == 2 and "unknown dtype" in r.stderr


def _profile(when, mm, bw, att, spread=0.1, device="cpu", name="CPU (calibrated)"):
    return {"key": "calibrated-cpu", "name": name, "kind": "calibration", "device": device,
            "peak_flops_per_s": {"fp32": mm}, "hbm_bytes_per_s": bw, "memory_bytes": 1 << 34,
            "attention_flops_per_s": {"sdpa": {"fp32": att[1024]}},
            "attention_flops_per_s_by_n": {"sdpa": {"fp32": {str(n): r for n, r in att.items()}}},
            "method": {"matmul": {"fp32": {"size": 2048, "spread": spread}}, "bandwidth": {"bytes": 1, "spread": spread},
                       "attention": {f"sdpa/fp32/{n}": {"n": n, "spread": spread} for n in att},
                       "attention_skipped": {}},
            "environment": {"date_utc": when}}


def test_keep_best_takes_each_rates_best_with_its_own_method_entry():
    from lcprof.measure.calibrate import merge_best

    old = _profile("2026-12-02T07:00:00Z", mm=1.3e11, bw=1.7e10, att={1024: 8e10, 4096: 7e10}, spread=0.4)
    new = _profile("2026-12-02T07:30:00Z", mm=1.0e11, bw=2.1e10, att={1024: 7e10, 4096: 9e10}, spread=0.05)
    m = merge_best(old, new)
    assert m["peak_flops_per_s"] == {"fp32": 1.3e11} and m["hbm_bytes_per_s"] == 2.1e10
    assert m["method"]["matmul"]["fp32"] == {"size": 2048, "spread": 0.4, "measured_utc": "2026-12-02T07:00:00Z"}
    assert m["method"]["bandwidth"]["measured_utc"] == "2026-12-02T07:30:00Z"
    assert m["attention_flops_per_s_by_n"] == {"sdpa": {"fp32": {"1024": 8e10, "4096": 9e10}}}
    assert m["attention_flops_per_s"] == {"sdpa": {"fp32": 8e10}}  # the first length's
    assert m["method"]["attention"]["sdpa/fp32/1024"]["measured_utc"] == "2026-12-02T07:00:00Z"
    assert m["method"]["attention"]["sdpa/fp32/4096"]["measured_utc"] == "2026-12-02T07:30:00Z"
    assert m["method"]["sessions"] == ["2026-12-02T07:00:00Z", "2026-12-02T07:30:00Z"]
    again = merge_best(m, _profile("2026-12-02T08:00:00Z", mm=1.1e11, bw=1e10, att={1024: 1e10, 4096: 1e10}))
    assert again["method"]["sessions"][-1] == "2026-12-02T08:00:00Z" and len(again["method"]["sessions"]) == 3
    assert again["peak_flops_per_s"]["fp32"] == 1.3e11
    assert again["method"]["matmul"]["fp32"]["measured_utc"] == "2026-12-02T07:00:00Z"  # kept from the first
    with pytest.raises(LcprofError, match="the existing profile is of 'GPU'"):
        merge_best(_profile("t", 1, 1, {1024: 1}, device="cuda", name="GPU"), new)


def test_keep_best_cli_merges_into_the_existing_profile(cli, tmp_path):
    out = tmp_path / "cpu.json"
    args = ("calibrate", "--out", out, "--device", "cpu", "--quick", "--dtype", "fp32", "--attention-n", "256",
            "--attention-shape", "2,16")
    assert cli(*args).exit_code == 0
    first = json.loads(out.read_text())
    first["peak_flops_per_s"]["fp32"] = 1e20  # a rate this CPU cannot reach: kept
    out.write_text(json.dumps(first))
    r = cli(*args, "--keep-best")
    assert r.exit_code == 0, r.output
    merged = json.loads(out.read_text())
    assert merged["peak_flops_per_s"]["fp32"] == 1e20
    assert len(merged["method"]["sessions"]) == 2
    assert merged["hbm_bytes_per_s"] >= first["hbm_bytes_per_s"]
    out.write_text("[]")
    r = cli(*args, "--keep-best")
    assert r.exit_code == 2 and "is not a profile written by `lcprof calibrate`" in r.stderr
