"""Run 3 of reports/mutation/cost.md: the 26 real survivors of run 2 against the per-step oracle, one process.

    cd REPO && PYTHONPATH=$PWD python3 reports/mutation/rerun_step_mutants.py

Measures every case of the per-step tests once (tests/measure/test_mixers.py, test_hybrid_layer.py,
test_tensor_audit.py: LiveBytes.steps of the marked torch layers; they do not depend on lcprof/cost/),
checks that the unmutated cost model matches all of them, then for each mutant writes its change (the
report table's change on today's line) into the source, reloads lcprof.cost, compares every case's
predicted steps with the measured ones and restores the file: killed when any case differs or raises,
as the owning test would fail. It edits the working tree while it runs: run it on a clean checkout."""
import importlib, sys, os
sys.path.insert(0, "tests")
import importlib.util
def load(p):
    s = importlib.util.spec_from_file_location(p.split('/')[-1][:-3], p); m = importlib.util.module_from_spec(s); s.loader.exec_module(m); return m
import torch
mx = load("tests/measure/test_mixers.py")
ta = load("tests/measure/test_tensor_audit.py")
hl = load("tests/measure/test_hybrid_layer.py")
from support.tiny_models import TINY_CONFIGS, tiny_spec, tiny_hybrid_spec
from lcprof.measure.layer import DecoderLayer
from lcprof.measure import backends as B
import lcprof.cost.kinds.common, lcprof.cost.kinds.mamba1, lcprof.cost.kinds.mamba2, lcprof.cost.kinds.deltanet, lcprof.cost.kinds.lightning, lcprof.cost.kinds, lcprof.cost.ops, lcprof.cost.model
MODS = [lcprof.cost.kinds.common, lcprof.cost.kinds.mamba1, lcprof.cost.kinds.mamba2, lcprof.cost.kinds.deltanet,
        lcprof.cost.kinds.lightning, lcprof.cost.ops, lcprof.cost.model]
cases = []  # (test name, fn() -> predicted dict, measured dict)
def pred_of(steps): return {k: int(v[0]) for k, v in steps.items() if float(v[0]) != 0.0}
for name in mx.SPECS:
    for dtype in ("fp32", "bf16"):
        for n, b, prefix in [(1, 1, 4), (3, 2, 0), (13, 2, 4), (40, 1, 0)]:
            spec, m, _ = mx.layer(name, mx.TORCH[dtype])
            lb = mx.traced_peak(spec, m, n, b=b, dtype=mx.TORCH[dtype], prefix=prefix)
            cases.append(("test_mixers::test_every_activation_step_matches_its_segment_of_the_layer",
                          lambda spec=spec, n=n, b=b, dtype=dtype, prefix=prefix: pred_of(lcprof.cost.kinds.mixer_activation_steps(spec, n, batch=b, dtype=dtype, prefix=prefix, chunk=mx.cost_chunk(spec))), dict(lb.steps)))
    spec, m, _ = mx.layer(name, torch.bfloat16)
    lb = mx.traced_peak(spec, m, 13, b=1, dtype=torch.bfloat16, prefix=0)
    cases.append(("test_mixers::test_activation_step_defaults_are_one_bf16_sequence",
                  lambda spec=spec: pred_of(lcprof.cost.kinds.mixer_activation_steps(spec, 13, chunk=mx.cost_chunk(spec))), dict(lb.steps)))
print("mixers measured", len(cases), flush=True)
for name, idx in hl.NO_ATTN_CASES:
    for dtype in ("fp32", "bf16"):
        for n, b, prefix in [(13, 2, 0), (70, 1, 0), (1, 2, 9), (9, 1, 4)]:
            B.clear_mask_cache()
            spec = tiny_hybrid_spec(name)
            lay = DecoderLayer(spec, idx).to(hl.TORCH[dtype]).eval()
            g = torch.Generator().manual_seed(1)
            x = torch.randn(b, n, spec.hidden_size, generator=g).to(hl.TORCH[dtype])
            state = None
            if prefix and lay.mixer is not None:
                with torch.no_grad():
                    _, state = lay(torch.randn(b, prefix, spec.hidden_size, generator=g).to(hl.TORCH[dtype]), return_kv=True)
            lb = hl._traced_peak(lay, x, state)
            cases.append(("test_hybrid_layer::test_activation_peak_equals_the_cost_model_to_the_byte",
                          lambda spec=spec, n=n, b=b, dtype=dtype, prefix=prefix, idx=idx: pred_of(lcprof.cost.model.activation_steps(spec, n, prefix=prefix, batch=b, dtype=dtype, layer=idx)), dict(lb.steps)))
print("hybrid measured", len(cases), flush=True)
for name, lyr, dtype, family in ta.CASES:
    spec = tiny_spec(name)
    lb = ta.traced_peak(spec, lyr, n=64, family=family, dtype=dtype)
    cases.append(("test_tensor_audit::test_every_prefill_step_matches_the_layer_to_the_byte",
                  lambda spec=spec, dtype=dtype, family=family, lyr=lyr: pred_of(lcprof.cost.model.activation_steps(spec, 64, dtype=dtype, family=family, layer=lyr)), dict(lb.steps)))
for name in TINY_CONFIGS:
    spec = tiny_spec(name)
    for family in ("tiled", "eager"):
        for m_, slots, batch in [(1, 64, 1), (16, 64, 1), (1, 40, 3), (8, 40, 3)]:
            for form in (("naive", "absorbed") if spec.mla is not None else ("naive",)):
                lb = ta.traced_peak(spec, 0, n=m_, family=family, dtype="fp32", batch=batch, cache_slots=slots, form=form)
                cases.append(("test_tensor_audit::test_every_cached_step_matches_the_layer_to_the_byte",
                              lambda spec=spec, m_=m_, batch=batch, slots=slots, family=family, form=form: pred_of(lcprof.cost.model.activation_steps(spec, m_, batch=batch, prefix=slots - m_, dtype="fp32", family=family, mla_form=form)), dict(lb.steps)))
print("all measured", len(cases), flush=True)
for t, f, meas in cases:
    assert f() == meas, t
print("baseline ok", flush=True)

K = "lcprof/cost/kinds/"
MUT = [
 ("kinds.lightning.x_activation_steps__mutmut_271", K+"lightning.py", 'st["mixer/out_proj"] = X + ss * S_el', 'st["mixer/out_proj"] = X - ss * S_el'),
 ("kinds.lightning.x_activation_steps__mutmut_206", K+"lightning.py", 'st["mixer/state_out"] = post + (c', 'st["mixer/state_out"] = post - (c'),
 ("kinds.common.x_gated_norm_steps__mutmut_75", K+"common.py", '(s * y if low else 0.0) + s * y  # normalized', '(s * y if low else 0.0) - s * y  # normalized'),
 ("kinds.mamba2.x_activation_steps__mutmut_198", K+"mamba2.py", 'st["mixer/chunk_state"]', 'st["XXmixer/chunk_stateXX"]'),
 ("kinds.deltanet.x_activation_steps__mutmut_80", K+"deltanet.py", 'st["mixer/gates"] = base0 + 2 * c * t * Hv', 'st["mixer/gates"] = base0 - 2 * c * t * Hv'),
 ("kinds.lightning.x_activation_steps__mutmut_79", K+"lightning.py", 'st["mixer/chunk_decay"]', 'st["XXmixer/chunk_decayXX"]'),
 ("kinds.mamba1.x_activation_steps__mutmut_165", K+"mamba1.py", 'loop + xt + c * b * di + (c * b * N', 'loop + xt - c * b * di + (c * b * N'),
 ("kinds.common.x_gated_norm_steps__mutmut_88", K+"common.py", 'post + 3 * s * y', 'post + 3 * s / y'),
 ("kinds.deltanet.x_activation_steps__mutmut_357", K+"deltanet.py", 'st["mixer/out_proj"]', 'st["MIXER/OUT_PROJ"]'),
 ("kinds.mamba2.x_activation_steps__mutmut_2", K+"mamba2.py", 'dtype: str = "bf16", prefix=0', 'dtype: str = "XXbf16XX", prefix=0'),
 ("kinds.mamba2.x_activation_steps__mutmut_71", K+"mamba2.py", 'st["mixer/dt"]', 'st["MIXER/DT"]'),
 ("model.x__attention_steps__mutmut_296", "lcprof/cost/model.py", 'steps_n["attn/o_proj"] = live_n + b * n_arr * (np.where', 'steps_n["ATTN/O_PROJ"] = live_n + b * n_arr * (np.where'),
 ("model.x__attention_steps__mutmut_310", "lcprof/cost/model.py", '(out + 4 * H)', '(out - 4 * H)'),
 ("model.x__attention_steps__mutmut_226", "lcprof/cost/model.py", 'att = att + s * b * keys', 'att = att + s / b * keys'),
 ("kinds.mamba2.x_activation_steps__mutmut_250", K+"mamba2.py", 'st["mixer/state_out"]', 'st["MIXER/STATE_OUT"]'),
 ("kinds.mamba1.x__rms_peak__mutmut_7", K+"mamba1.py", 'copy = c * y if s < 4 else', 'copy = c * y if (s < 4) or True else'),
 ("kinds.mamba1.x_activation_steps__mutmut_164", K+"mamba1.py", 'c * b * di + (c * b * N if low else 0.0) + c * S_el', 'c * b * di - (c * b * N if low else 0.0) + c * S_el'),
 ("kinds.mamba1.x_activation_steps__mutmut_168", K+"mamba1.py", 'loop + xt + c * b * di + (c * b * N', 'loop + xt + c / b * di + (c * b * N'),
 ("model.x__attention_heads__mutmut_20", "lcprof/cost/model.py", 'None if layer is None else spec.attn_dims(layer)', 'None if (layer is None) or True else spec.attn_dims(layer)'),
 ("kinds.common.x_gated_norm_steps__mutmut_59", K+"common.py", 'c * t * groups  # squares', 'c * t / groups  # squares'),
 ("kinds.mamba2.x_activation_steps__mutmut_1", K+"mamba2.py", 'def activation_steps(m, n, *, batch: int = 1,', 'def activation_steps(m, n, *, batch: int = 2,'),
 ("model.x_activation_steps__mutmut_107", "lcprof/cost/model.py", 'own = mixer_activation_steps(mixer, n_arr, batch=batch, dtype=dtype, prefix=prefix)', 'own = mixer_activation_steps(mixer, n_arr, batch=batch, prefix=prefix)'),
 ("kinds.mamba2.x_activation_steps__mutmut_149", K+"mamba2.py", 'loop + core + acum + sq_h + sq_g', 'loop - core + acum + sq_h + sq_g'),
 ("model.x_activation_steps__mutmut_51", "lcprof/cost/model.py", 'resident = np.zeros_like(n_arr)', 'resident = None'),
 ("kinds.common.x_gated_norm_steps__mutmut_54", K+"common.py", 'out["mixer/norm_square"]', 'out["MIXER/NORM_SQUARE"]'),
]
def reload_all():
    for mod in MODS:
        importlib.reload(mod)
for mname, path, old, new in MUT:
    src = open(path).read()
    assert src.count(old) == 1, (mname, old)
    try:
        open(path, "w").write(src.replace(old, new))
        reload_all()
        why = None
        for t, f, meas in cases:
            try:
                if f() != meas:
                    why = t; break
            except Exception as e:
                why = f"{t} ({type(e).__name__})"; break
    finally:
        open(path, "w").write(src)
    print("killed" if why else "SURVIVED", mname, why or "", flush=True)
reload_all()
