"""How a deployment splits a model over GPUs, checked in one place. No torch.

One **replica** (one engine instance, its own scheduler and request queue per attention-data-
parallel rank) spans ``tp x dp x pp`` GPUs:

* ``tp`` -- tensor parallel: attention heads (K/V heads replicated when ``tp`` exceeds them),
  dense MLP width, shared experts and the vocabulary split ``tp`` ways; MLA's latent is NOT split
  (every rank caches it whole);
* ``dp`` -- attention data parallel (vLLM ``--data-parallel-size`` with a MoE model, SGLang
  ``--enable-dp-attention``): ``dp`` groups of ``tp`` GPUs each run attention for their own
  requests and hold their own KV pool; the routed experts span all ``tp x dp`` GPUs of a stage;
* ``ep`` -- expert parallel: 1 (every expert's width split over the ``tp x dp`` MoE group, an
  all-reduce after the MoE) or ``tp x dp`` (whole experts split over them, tokens dispatched
  and combined by all-to-all);
* ``pp`` -- pipeline parallel: layers split into ``pp`` stages (``lcprof.cost.weights.stage_layers``).

``gpus`` GPUs make ``gpus / (tp x dp x pp)`` replicas. :func:`parallel_problem` is the only
validity check (the planner, the grid and the CLI all call it).
"""

from __future__ import annotations

from dataclasses import dataclass

from lcprof.cost.model import kv_heads_per_gpu
from lcprof.cost.weights import Sharding, stage_layers
from lcprof.errors import LcprofError
from lcprof.spec import ModelSpec


@dataclass(frozen=True)
class Parallel:
    """A replica's layout (module docstring); ``ep`` is 1 or ``tp x dp``."""

    tp: int = 1
    dp: int = 1
    ep: int = 1
    pp: int = 1

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.dp * self.pp

    @property
    def expert_shards(self) -> int:
        """GPUs of one stage the routed experts are spread over."""
        return self.tp * self.dp

    @property
    def expert_parallel(self) -> bool:
        return self.ep > 1

    @property
    def label(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.dp > 1:
            parts.append(f"DP{self.dp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        return " ".join(parts)

    def stages(self, spec: ModelSpec) -> list[tuple[int, ...]]:
        return stage_layers(spec.n_layers, self.pp)

    def sharding(self, spec: ModelSpec, stage: int = 0, vocab_padding: int = 1) -> Sharding:
        """The weight sharding of one GPU of pipeline stage ``stage``."""
        layers = self.stages(spec)[stage]
        return Sharding(tp=self.tp, expert_shards=self.expert_shards, expert_parallel=self.expert_parallel,
                        layers=layers, first_stage=stage == 0, last_stage=stage == self.pp - 1,
                        pipeline=self.pp > 1, vocab_padding=vocab_padding)


def parallel_problem(spec: ModelSpec, par: Parallel, gpus: int | None = None) -> str | None:
    """Why ``par`` cannot serve ``spec`` (on ``gpus`` GPUs), or None when it can. One line."""
    for name in ("tp", "dp", "ep", "pp"):
        v = getattr(par, name)
        if not isinstance(v, int) or v <= 0:
            return f"--{name} must be a positive integer, got {v!r}"
    if spec.n_heads % par.tp:
        return f"TP={par.tp} does not divide {spec.name}'s {spec.n_heads} attention heads"
    if spec.mla is None and spec.has_attention:
        try:
            kv_heads_per_gpu(spec, par.tp)
        except LcprofError as exc:
            return str(exc)
    if spec.intermediate_size and any(not layer.moe for layer in spec.layers) and spec.intermediate_size % par.tp:
        return f"TP={par.tp} does not divide {spec.name}'s MLP width {spec.intermediate_size}"
    if par.dp > 1 and spec.moe is None:
        return (f"--dp {par.dp} is attention data parallel for MoE models; {spec.name} is dense, so its "
                f"data-parallel copies are replicas: use --gpus instead")
    if par.ep > 1:
        if spec.moe is None:
            return f"--ep {par.ep}: {spec.name} has no routed experts"
        if par.ep != par.expert_shards:
            return (f"--ep {par.ep} must be 1 or tp x dp = {par.expert_shards} (the engines spread experts over "
                    f"every GPU of the attention TP x DP group)")
        if spec.moe.n_experts % par.ep:
            return f"EP={par.ep} does not divide {spec.name}'s {spec.moe.n_experts} routed experts"
    elif spec.moe is not None and spec.moe.expert_intermediate_size % par.expert_shards:
        return (f"TP over the MoE group of {par.expert_shards} GPUs does not divide {spec.name}'s expert width "
                f"{spec.moe.expert_intermediate_size}; use --ep {par.expert_shards}")
    if spec.moe is not None and spec.moe.n_shared:
        width = spec.moe.n_shared * spec.moe.shared_intermediate_size
        if width % par.tp:
            return f"TP={par.tp} does not divide {spec.name}'s shared-expert width {width}"
    if par.pp > spec.n_layers:
        return f"--pp {par.pp} is more stages than {spec.name}'s {spec.n_layers} layers"
    if gpus is not None:
        if gpus <= 0:
            return f"--gpus must be positive, got {gpus}"
        if gpus % par.gpus_per_replica:
            return (f"--gpus {gpus} is not a multiple of tp x dp x pp = {par.gpus_per_replica}; "
                    f"replicas need {par.gpus_per_replica} GPUs each")
    return None


def check_parallel(spec: ModelSpec, par: Parallel, gpus: int | None = None) -> None:
    problem = parallel_problem(spec, par, gpus)
    if problem:
        raise LcprofError(problem)
