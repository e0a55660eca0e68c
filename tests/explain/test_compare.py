"""compare: roofline predictions checked against FLOPs and bytes counted by hand; over-peak rows flagged."""

import json

import numpy as np
import pandas as pd
import pytest

from lcprof.explain.compare import OverPeakWarning, UnresolvedRowWarning, compare_results
from lcprof.errors import LcprofError
from lcprof.hardware import Hardware
from lcprof.spec import spec_from_config

TOY_CONFIG = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000, "max_position_embeddings": 4096,
}
H, KVH, HD, HID, INTER = 4, 2, 16, 64, 128  # heads, KV heads, head_dim = 64 / 4, hidden, MLP width


def hand_flops(n, backend):
    """One layer, prefill of n tokens, batch 1; 2 FLOPs per multiply-add."""
    linear = (2 * n * HID * H * HD            # q
              + 2 * n * HID * KVH * 2 * HD    # k and v
              + 2 * n * H * HD * HID          # o
              + 3 * 2 * n * HID * INTER)      # gate, up, down
    if backend == "eager":  # full n x n square
        pairs = n * n
    elif backend == "useful":  # causal: n(n+1)/2
        pairs = n * (n + 1) // 2
    else:  # tiled 128 x 128, causal, n a multiple of 128: T(T+1)/2 whole tiles
        tiles = n // 128
        pairs = tiles * (tiles + 1) // 2 * 128 * 128
    attn = 2 * H * pairs * HD + 2 * H * pairs * HD  # QK^T and PV
    return linear + attn, linear + 2 * 2 * H * (n * (n + 1) // 2) * HD


def hand_bytes_eager_fp32(n):
    """HBM bytes per op, fp32, the cost model's convention, counted independently: matmuls read their
    inputs and weights once and write once; the unfused elementwise ops each read and write."""
    s = 4
    lin = lambda d_in, d_out: s * (d_in * d_out + n * d_in + n * d_out)  # weights + input + output
    pairs = H * n * n  # eager computes the whole (heads, n, n) square
    norm = n * HID * 7 * s + n * 6 * s + HID * s  # fp32 RMSNorm: pow, mean, scale, weight; per-token
    # sums; the weight once
    rope = s * (n * 10 * (H * HD + KVH * HD) + 2 * 2 * n * HD)  # q and k: 10 passes; cos/sin twice each
    eager = (pairs * 3 * 2 * s  # scale, mask, softmax: each reads and writes the scores
             + 3 * n * n  # the boolean mask inverted (read, write) and read
             + 2 * s * n * H * 2 * HD  # K and V repeated to 4 heads (GQA)
             + 2 * s * n * H * HD)  # the output transposed back
    total = (lin(HID, H * HD) + lin(HID, KVH * 2 * HD)
             + (n * H * HD * s + n * KVH * HD * s + pairs * s)  # qk: q, k, write the scores
             + eager
             + (n * KVH * HD * s + n * H * HD * s + pairs * s)  # pv: v, o, read the probabilities
             + lin(H * HD, HID)
             + lin(HID, INTER) * 2 + lin(INTER, HID)  # gate, up, down
             + 2 * norm + rope + 6 * s * n * HID  # two norms, RoPE, two residual adds
             + 5 * s * n * INTER)  # silu (read, write), silu * up (read 2, write)
    return total


def toy_hw(peak=1e12, bw=1e30):
    return Hardware(key="toy", name="Toy accelerator", peak_flops_per_s={"fp32": peak, "bf16": 4 * peak},
                    hbm_bytes_per_s=bw, memory_bytes=1 << 34)


def rows_for(model, backend, ns, times, dtype="fp32"):
    return pd.DataFrame({"model": model, "backend": backend, "dtype": dtype, "device": "cuda", "batch": 1,
                         "n": list(ns), "time_s": list(times), "status": "ok"})


@pytest.mark.parametrize("backend,family", [("eager", "eager"), ("sdpa-flash", "tiled"), ("sdpa-math", "eager")])
def test_compute_bound_roofline_matches_hand_flops(backend, family):
    spec = spec_from_config(TOY_CONFIG, "toy")
    ns = [256, 512, 1024]
    exec_flops = [hand_flops(n, family)[0] for n in ns]
    pred = [f / 1e12 for f in exec_flops]
    times = [2.0 * p for p in pred]  # run at half the roofline
    res = compare_results(rows_for("toy", backend, ns, times), hardware=toy_hw(), specs={"toy": spec})
    r = res.rows
    np.testing.assert_allclose(r["executed_flops"], exec_flops, rtol=1e-12)
    np.testing.assert_allclose(r["useful_flops"], [hand_flops(n, "useful")[1] for n in ns], rtol=1e-12)
    np.testing.assert_allclose(r["predicted_time_s"], pred, rtol=1e-9)
    np.testing.assert_allclose(r["ratio"], 2.0, rtol=1e-9)
    np.testing.assert_allclose(r["achieved_tflops_per_s"], 0.5, rtol=1e-9)
    np.testing.assert_allclose(r["pct_of_peak"], 50.0, rtol=1e-9)
    assert not r["over_peak"].any() and not r["flagged"].any() and (r["bound"] == "compute").all()
    # predicted local exponents are those of the hand-counted FLOPs
    e = res.exponents
    want = np.log(np.array(exec_flops[1:]) / exec_flops[:-1]) / np.log(2.0)
    np.testing.assert_allclose(e["predicted_local_exponent"], want, rtol=1e-9)
    np.testing.assert_allclose(e["measured_local_exponent"], want, rtol=1e-9)


def test_memory_bound_roofline_matches_hand_bytes():
    spec = spec_from_config(TOY_CONFIG, "toy")
    ns = [128, 384]
    hw = toy_hw(peak=1e30, bw=1e9)
    res = compare_results(rows_for("toy", "eager", ns, [1.0, 1.0]), hardware=hw, specs={"toy": spec})
    want = [hand_bytes_eager_fp32(n) / 1e9 for n in ns]
    np.testing.assert_allclose(res.rows["predicted_time_s"], want, rtol=1e-12)
    assert (res.rows["bound"] == "memory").all()


def test_model_given_as_a_config_path(tmp_path):
    cfg = tmp_path / "toy" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(TOY_CONFIG))
    res = compare_results(rows_for(str(cfg), "eager", [256], [1.0]), hardware=toy_hw())
    assert res.rows["executed_flops"].iloc[0] == hand_flops(256, "eager")[0]


def test_over_peak_row_is_flagged_loudly():
    spec = spec_from_config(TOY_CONFIG, "toy")
    ns = [256, 512, 1024]
    pred = [hand_flops(n, "eager")[0] / 1e12 for n in ns]
    times = [2 * pred[0], pred[1] / 3.0, 2 * pred[2]]  # the middle row is doctored: 3x faster than possible
    with pytest.warns(OverPeakWarning, match="more than the peak"):
        res = compare_results(rows_for("toy", "eager", ns, times), hardware=toy_hw(), specs={"toy": spec})
    r = res.rows
    assert list(r["over_peak"]) == [False, True, False]
    assert r["achieved_tflops_per_s"].iloc[1] == pytest.approx(3.0)
    assert "OVER PEAK" in r["note"].iloc[1] and r["flagged"].iloc[1]
    assert res.over_peak_rows == 1


def test_over_peak_in_the_cli(cli, tmp_path):
    cfg = tmp_path / "toy.json"
    cfg.write_text(json.dumps(TOY_CONFIG))
    flops = hand_flops(1024, "tiled")[0]
    # an H100 SXM does 989.4 TFLOP/s in bf16 (dense); claim twice that
    t = flops / 2e15
    path = tmp_path / "r.csv"
    rows_for(str(cfg), "sdpa", [512, 1024], [1e-3, t], dtype="bf16").to_csv(path, index=False)
    r = cli("compare", path, "--gpu", "h100-sxm", "--format", "json")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert [x["over_peak"] for x in recs] == [False, True]
    assert "warning" in r.stderr and "more than the peak" in r.stderr


def test_unknown_model_row_is_flagged_not_fatal():
    spec = spec_from_config(TOY_CONFIG, "toy")
    df = pd.concat([rows_for("toy", "eager", [256], [1.0]), rows_for("no-such-model", "eager", [256], [1.0])])
    with pytest.warns(UnresolvedRowWarning, match="no-such-model"):
        res = compare_results(df, hardware=toy_hw(), specs={"toy": spec})
    r = res.rows.set_index("model")
    assert r.loc["no-such-model", "flagged"] and np.isnan(r.loc["no-such-model", "predicted_time_s"])
    assert "no-such-model" in r.loc["no-such-model", "note"]
    assert not r.loc["toy", "flagged"] and r.loc["toy", "predicted_time_s"] > 0


def test_eight_column_file_is_accepted_by_compare(data_dir, cli):
    res = compare_results(data_dir / "eight-columns.csv", gpu="a100-80gb")
    assert len(res.rows) == 6 and not res.rows["flagged"].any()
    assert (res.rows["pct_of_peak"] < 100).all() and (res.rows["ratio"] > 1).all()
    r = cli("compare", data_dir / "eight-columns.csv", "--gpu", "a100-80gb")
    assert r.exit_code == 0 and "predicted_local_exponent" in r.stdout


def test_calibration_profile_is_accepted(tmp_path, data_dir):
    prof = {"key": "toy-cpu", "name": "Toy CPU", "peak_flops_per_s": {"fp32": 1.5e11, "bf16": 3e11},
            "hbm_bytes_per_s": 3e10, "memory_bytes": 1 << 34}
    p = tmp_path / "p.json"
    p.write_text(json.dumps(prof))
    res = compare_results(data_dir / "phi3-cpu-small.csv", calibration=p)
    assert res.hardware.kind == "calibration" and res.excluded_rows == 2
    assert res.rows["ratio"].between(0.5, 5).all()


def test_hardware_is_required_and_exclusive(data_dir):
    with pytest.raises(LcprofError, match="--gpu NAME .* or --calibration"):
        compare_results(data_dir / "phi3-cpu-small.csv")
    with pytest.raises(LcprofError, match="not both"):
        compare_results(data_dir / "phi3-cpu-small.csv", gpu="h100", calibration="x.json")


def test_compare_follows_the_executed_family_a_row_records():
    # an SDPA row whose sweep recorded that the whole rectangle ran (an explicit mask, or SDPA's
    # math kernel) is predicted as eager work; rows without the column use the backend's family
    spec = spec_from_config(TOY_CONFIG, "toy")
    ns = [256, 512]
    rows = rows_for("toy", "sdpa-flash", ns, [1.0, 1.0])
    plain = compare_results(rows, hardware=toy_hw(), specs={"toy": spec})
    np.testing.assert_allclose(plain.rows["executed_flops"], [hand_flops(n, "tiled")[0] for n in ns], rtol=1e-12)
    rows["executed_family"] = ["eager", "tiled"]
    mixed = compare_results(rows, hardware=toy_hw(), specs={"toy": spec})
    np.testing.assert_allclose(mixed.rows["executed_flops"], [hand_flops(256, "eager")[0], hand_flops(512, "tiled")[0]],
                               rtol=1e-12)
    np.testing.assert_allclose(mixed.rows["predicted_time_s"], [hand_flops(256, "eager")[0] / 1e12,
                                                                hand_flops(512, "tiled")[0] / 1e12], rtol=1e-12)
