"""Timing a whole-model (or one-layer) point, lcprof's or transformers', with the sweep's timer.

:class:`_Subject` holds what one dtype's points run on (the model, one layer, or transformers'
model with the same weights), built once. :func:`time_point` times one point -- the whole model,
one layer, or one layer of each kind and the head summed by the schedule (``kinds-scaled``) -- and
records its statistics, peak memory and load, OOM as ``oom`` and any other failure as ``error``.
Used by :mod:`lcprof.measure.model_sweep`.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import torch

from lcprof.measure import backends as B
from lcprof.measure.check import is_oom
from lcprof.measure.env import LoadProbe, PeakMemory
from lcprof.measure.model import Model, build_layer, distinct_layers, kind_label, layer_decode_cache
from lcprof.measure.sweep import _first_line
from lcprof.measure.timer import Measurement, measure
from lcprof.spec import ModelSpec

if TYPE_CHECKING:
    from lcprof.measure.model_sweep import _Point, _Settings


def _free(dev: torch.device) -> None:
    B.clear_mask_cache()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


class _Subject:
    """What one dtype's points run on: the whole model (lcprof's or transformers'), built once."""

    def __init__(self, cfg: _Settings, dt: str) -> None:
        self.cfg, self.dt = cfg, dt
        self.tdt = B.torch_dtype(dt)[0]
        self.model = None
        self.hf = None
        self.layers: dict = {}

    def lcprof_layer(self, idx: int, form: str):
        """Layer ``idx`` alone (built once per MLA form)."""
        cfg = self.cfg
        if (idx, form) not in self.layers:
            self.layers.clear()
            self.layers[(idx, form)] = build_layer(cfg.spec, idx, seed=cfg.seed, moe_timing=cfg.moe, mla_form=form
                                                   ).to(device=cfg.dev, dtype=self.tdt).eval()
        return self.layers[(idx, form)]

    def lcprof_model(self, spec: ModelSpec | None = None) -> Model:
        cfg = self.cfg
        if spec is not None:
            return Model(spec, seed=cfg.seed, moe_timing=cfg.moe, init=cfg.init, device=cfg.dev, dtype=self.tdt).eval()
        if self.model is None:
            self.model = Model(cfg.spec, seed=cfg.seed, moe_timing=cfg.moe, init=cfg.init, device=cfg.dev,
                               dtype=self.tdt).eval()
        return self.model

    def hf_model(self, impl_backend: str):
        from lcprof.measure.hf import IMPL_OF, HFModel

        cfg = self.cfg
        if self.hf is None:
            spec = cfg.spec if cfg.layer_idx is None else cfg.spec.with_layers(cfg.spec.layers[:cfg.layer_idx + 1])
            ours = self.lcprof_model(spec)
            self.hf = HFModel(ours, IMPL_OF[impl_backend], device=cfg.dev, dtype=self.tdt)
            del ours
            _free(cfg.dev)
        self.hf.set_attn_implementation(IMPL_OF[impl_backend])
        return self.hf

    def release(self) -> None:
        self.model = None
        self.hf = None
        self.layers.clear()
        _free(self.cfg.dev)


def _ids(cfg: _Settings, n: int, sets: int, salt: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * n + salt)
    return [torch.randint(0, cfg.spec.vocab_size, (cfg.batch, n), generator=g).to(cfg.dev) for _ in range(sets)]


def _measure(cfg: _Settings, fn, inputs, graph: bool) -> Measurement:
    return measure(fn, inputs, device=cfg.dev, budget_s=cfg.budget_s, min_reps=cfg.min_reps, max_reps=cfg.max_reps,
                   cuda_graph=graph)


def _lcprof_layer_fn(cfg: _Settings, layer, p: _Point, tdt, sets: int):
    """(fn, inputs) for one lcprof layer: hidden states, and (decode) its cache at context n."""
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * p.n + 1)
    h = cfg.spec.hidden_size
    if p.phase == "prefill":
        xs = [torch.randn(cfg.batch, p.n, h, generator=g).to(device=cfg.dev, dtype=tdt) for _ in range(sets)]
        return (lambda x: layer(x)), xs
    inputs = [(torch.randn(cfg.batch, 1, h, generator=g).to(device=cfg.dev, dtype=tdt),
               layer_decode_cache(layer, cfg.batch, p.n, dtype=tdt, device=cfg.dev, generator=g)) for _ in range(sets)]
    return (lambda inp: layer(inp[0], inp[1], start=p.n)), inputs


def _time_lcprof(cfg: _Settings, subject: _Subject, p: _Point) -> Measurement:
    sets = int(p.row["input_sets"])
    graph = cfg.graph(p.phase)
    attention = B.get_backend(p.backend)
    if cfg.layer_idx is not None:
        layer = subject.lcprof_layer(cfg.layer_idx, cfg.mla_form(p.phase) or "naive")
        layer.attention = attention
        fn, inputs = _lcprof_layer_fn(cfg, layer, p, subject.tdt, sets)
        return _measure(cfg, fn, inputs, graph)
    model = subject.lcprof_model()
    model.set_attention(attention)
    model.set_mla_form(cfg.mla_form(p.phase) or "naive")
    if p.phase == "prefill":
        return _measure(cfg, lambda ids: model(ids), _ids(cfg, p.n, sets), graph)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * p.n + 2)
    inputs = [(ids, model.decode_caches(cfg.batch, p.n, generator=g)) for ids in _ids(cfg, 1, sets)]
    return _measure(cfg, lambda inp: model(inp[0], inp[1], start=p.n), inputs, graph)


def _time_scaled(cfg: _Settings, subject: _Subject, p: _Point) -> Measurement:
    """One layer of each kind and the head, each timed alone; summed by the schedule."""
    attention = B.get_backend(p.backend)
    parts: list[tuple[str, int, Measurement]] = []
    for idx, count in distinct_layers(cfg.spec):
        layer = build_layer(cfg.spec, idx, seed=cfg.seed, moe_timing=cfg.moe,
                            mla_form=cfg.mla_form(p.phase) or "naive").to(device=cfg.dev, dtype=subject.tdt).eval()
        layer.attention = attention
        fn, inputs = _lcprof_layer_fn(cfg, layer, p, subject.tdt, 1)
        parts.append((kind_label(cfg.spec, idx), count, _measure(cfg, fn, inputs, cfg.graph(p.phase))))
        del layer, fn, inputs
        _free(cfg.dev)
    head = _head_module(cfg, subject.tdt)
    m_head = _measure(cfg, head, _ids(cfg, p.n if p.phase == "prefill" else 1, 1, salt=3), False)
    parts.append(("head", 1, m_head))
    med = sum(c * m.median_s for _, c, m in parts)
    p10 = sum(c * m.p10_s for _, c, m in parts)
    p90 = sum(c * m.p90_s for _, c, m in parts)
    p.row["scaled_parts"] = " ".join(f"{lab}x{c}={m.median_s!r}" for lab, c, m in parts)
    return Measurement(samples_s=(p10, med, p90), clock=parts[0][2].clock, warmup_calls=0, input_sets=1,
                       note="kinds-scaled: samples are the summed p10, median and p90 of the parts")


def _head_module(cfg: _Settings, tdt):
    """embedding -> final norm -> LM head of the last position, with the model's weights' shapes."""
    from lcprof.measure.layer import RMSNorm

    eps = float(cfg.spec.config.get("rms_norm_eps", cfg.spec.config.get("layer_norm_eps", 1e-6)))
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 11)
    h, v = cfg.spec.hidden_size, cfg.spec.vocab_size
    emb = torch.randn(v, h, generator=g).to(device=cfg.dev, dtype=tdt)
    head = emb if cfg.spec.tie_embeddings else (torch.randn(v, h, generator=g) / h ** 0.5).to(device=cfg.dev, dtype=tdt)
    norm = RMSNorm(h, eps, cfg.spec.norm_one_centred).to(device=cfg.dev, dtype=tdt)

    from lcprof.measure.model import scale_embeddings, scale_logits

    def run(ids):  # as Model.embeddings and Model.forward: the embedding scale, the logits' soft-capping or scaling
        x = scale_embeddings(cfg.spec, torch.nn.functional.embedding(ids, emb))
        return scale_logits(cfg.spec, torch.nn.functional.linear(norm(x)[:, -1, :], head))

    return run


def _time_hf(cfg: _Settings, subject: _Subject, p: _Point) -> Measurement:
    hfm = subject.hf_model(p.backend)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * p.n + 4)
    note = ""
    if p.phase == "decode":
        cache = hfm.decode_cache(cfg.batch, p.n, generator=g)
        note = "transformers' DynamicCache grows one token per timed step (contexts n .. n + repeats - 1)"
    else:
        cache = None
    if cfg.layer_idx is None:
        if p.phase == "prefill":
            m = _measure(cfg, lambda ids: hfm(ids), _ids(cfg, p.n, 1), False)
        else:
            m = _measure(cfg, lambda ids: hfm(ids, cache), _ids(cfg, 1, 3), False)
    else:
        ids = _ids(cfg, p.n if p.phase == "prefill" else 1, 1)[0]
        args, kwargs = hfm.capture_layer_call(cfg.layer_idx, ids, cache)
        call, x = hfm.layer_fn(cfg.layer_idx, args, kwargs, decode=p.phase == "decode")
        xs = [x] + [torch.randn(x.shape, generator=g).to(device=x.device, dtype=x.dtype) for _ in range(2)]
        m = _measure(cfg, call, xs, False)
    if note:
        p.row["reason"] = note
    return m


def time_point(cfg: _Settings, subject: _Subject, p: _Point) -> None:
    failed = False
    probe = LoadProbe(cfg.dev).start()
    try:
        with PeakMemory(cfg.dev) as pm:
            if cfg.impl == "transformers":
                m = _time_hf(cfg, subject, p)
            elif p.scope == "kinds-scaled":
                m = _time_scaled(cfg, subject, p)
            else:
                m = _time_lcprof(cfg, subject, p)
        p.row.update(m.summary())
        if m.note:
            p.row["reason"] = (p.row["reason"] + "; " if p.row["reason"] else "") + m.note
        p.row["peak_mem_bytes"] = pm.peak_bytes
        p.row["peak_mem_source"] = pm.source
        p.row["achieved_flops_per_s"] = p.row["predicted_flops"] / m.median_s if m.median_s > 0 else None
        p.row["samples_s"] = " ".join(repr(float(s)) for s in m.samples_s)
        p.row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing point must not stop the sweep
        failed = True
        p.row["status"] = "oom" if is_oom(exc) else "error"
        p.row["reason"] = _first_line(exc)
    p.row.update(probe.stop())
    if failed or p.scope == "kinds-scaled":
        subject.model = None
    B.clear_mask_cache()
    if failed:
        _free(cfg.dev)
