"""compare predicts each row from its own point key: here, the MLA form each row recorded."""

import pandas as pd
import pytest

from lcprof.explain.compare import compare_results


def test_compare_predicts_each_rows_recorded_mla_form():
    # deepseek-v2-lite layer 0: 16 heads, kv_lora_rank 512, qk_nope 128, qk_rope 64, v_head 128, no q LoRA.
    # naive  : attention 2*16*P*(192 + 128) and kv_b over the keys 2*n*512*16*(128 + 128)
    # absorbed: attention 2*16*P*(576 + 512), q_absorb 2*n*16*128*512 and v_unabsorb 2*n*16*512*128
    # (the same 2*n*16*512*256 as kv_b), so absorbed - naive = 2*16*(1088 - 320)*P = 24576*P, with
    # P = n*n pairs for eager (executed_family eager).
    n = 256
    rows = pd.DataFrame({
        "model": "deepseek-v2-lite", "backend": "eager", "dtype": "bf16", "device": "cuda", "batch": 1, "n": n,
        "time_s": 1e-3, "status": "ok", "executed_family": "eager", "mla_form": ["naive", "absorbed"],
    })
    res = compare_results(rows, gpu="h100-sxm")
    by = res.rows.set_index("mla_form")
    assert by.loc["absorbed", "executed_flops"] - by.loc["naive", "executed_flops"] == pytest.approx(24576 * n * n,
                                                                                                    rel=1e-12)
    assert len(res.rows) == 2  # two points, two predictions
    # a file without the column is predicted in the phase's default form (naive for prefill)
    plain = compare_results(rows.drop(columns="mla_form").iloc[:1], gpu="h100-sxm")
    assert plain.rows["executed_flops"].iloc[0] == by.loc["naive", "executed_flops"]
