"""lcprof and transformers whole models back to back in one process (same weights, same tokens)."""
import time
import torch
from lcprof.spec import load_model
from lcprof.measure.model import Model
from lcprof.measure.backends import get_backend
from lcprof.measure.hf import HFModel
s = load_model("reports/cpu-whole-model/small-llama.json")
m = Model(s).eval(); m.set_attention(get_backend("sdpa"))
h = HFModel(m, "sdpa")
ids = torch.randint(0, s.vocab_size, (1, 256), generator=torch.Generator().manual_seed(0))
samples = {"lcprof": [], "transformers": []}
with torch.inference_mode():
    m(ids); h(ids)
    for _ in range(5):  # interleaved: each round times both
        for name, f in (("lcprof", m), ("transformers", h)):
            t0 = time.perf_counter(); f(ids); samples[name].append(time.perf_counter() - t0)
import os
print(f"small-llama prefill n=256 fp32, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load {os.getloadavg()[0]:.1f}")
for name, ts in samples.items():
    print(name, "median_s", sorted(ts)[2], "samples_s", " ".join(f"{t:.4f}" for t in ts))
