"""Re-run activation-step mutants of lcprof/cost/ against the LiveBytes oracle, in one process.

    cd WORK_DIR/mutants && PYTHONPATH=$PWD python3 .../rerun_activation_mutants.py NAMES_FILE

The owning tests (tests/measure/test_mixers.py::test_activation_peak_matches_the_layer_to_the_byte and
tests/measure/test_tensor_audit.py's prefill and cached-step peaks) measure the real torch layers'
live bytes and compare them with the cost model's activation steps, to the byte. The measured peaks do
not depend on lcprof/cost/, so they are measured once with no mutant active; each mutant is then
switched on (MUTANT_UNDER_TEST) and the same cases' predictions are compared with them: killed when
any differs, as the owning test would fail."""
import importlib.util
import os
import sys

names = open(sys.argv[1]).read().split()
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
os.environ["MUTANT_UNDER_TEST"] = ""


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mx = load("tests/measure/test_mixers.py")
ta = load("tests/measure/test_tensor_audit.py")
from lcprof.cost.kinds import mixer_activation_bytes, mixer_activation_steps  # noqa: E402
from lcprof.cost.model import activation_bytes  # noqa: E402
from support.tiny_models import TINY_CONFIGS, tiny_spec  # noqa: E402

mixer_cases = []
for name in mx.SPECS:
    for dtype in ("fp32", "bf16"):
        for n, b, prefix in [(1, 1, 4), (3, 2, 0), (13, 2, 4), (40, 1, 0)]:
            spec, m, _ = mx.layer(name, mx.TORCH[dtype])
            peak = mx.traced_peak(spec, m, n, b=b, dtype=mx.TORCH[dtype], prefix=prefix).peak_bytes
            mixer_cases.append((spec, dtype, n, b, prefix, peak))
attn_cases = []
for name, lyr, dtype, family in ta.CASES:
    spec = tiny_spec(name)
    attn_cases.append((dict(n=64, dtype=dtype, family=family, layer=lyr), spec,
                       ta.traced_peak(spec, lyr, n=64, family=family, dtype=dtype).peak_bytes))
for name in TINY_CONFIGS:
    spec = tiny_spec(name)
    for m in (1, 16):
        for family in ("tiled", "eager"):
            for form in (("naive", "absorbed") if spec.mla is not None else ("naive",)):
                peak = ta.traced_peak(spec, 0, n=m, family=family, dtype="fp32", cache_slots=64, form=form).peak_bytes
                attn_cases.append((dict(n=m, prefix=64 - m, dtype="fp32", family=family, mla_form=form), spec, peak))
print(f"# {len(mixer_cases)} mixer cases, {len(attn_cases)} attention-layer cases measured", flush=True)


def killed() -> str | None:
    for spec, dtype, n, b, prefix, peak in mixer_cases:
        chunk = mx.cost_chunk(spec)
        steps = mixer_activation_steps(spec, n, batch=b, dtype=dtype, prefix=prefix, chunk=chunk)
        top = max(steps, key=lambda k: float(steps[k][0]))
        if int(steps[top][0]) != peak or int(mixer_activation_bytes(spec, n, batch=b, dtype=dtype, prefix=prefix,
                                                                    chunk=chunk)[0]) != peak:
            return f"mixer {spec.kind} {dtype} n={n} b={b} prefix={prefix}"
    for kw, spec, peak in attn_cases:
        kw = dict(kw)
        n = kw.pop("n")
        if int(activation_bytes(spec, n, **kw)[0]) != peak:
            return f"layer {spec.name} {kw}"
    return None


for name in names:
    os.environ["MUTANT_UNDER_TEST"] = name
    try:
        why = killed()
    except BaseException as exc:  # noqa: BLE001 - an exception fails the owning test too
        why = type(exc).__name__
    print("killed" if why else "survived", name, why or "", flush=True)
os.environ["MUTANT_UNDER_TEST"] = ""
