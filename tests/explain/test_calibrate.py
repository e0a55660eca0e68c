"""calibrate --quick on the CPU writes a profile that load_calibration reads, with positive rates."""

import json


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
