"""Mixture-of-experts MLP shapes. No torch."""

from __future__ import annotations

from dataclasses import dataclass

from lcprof.errors import LcprofError


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts MLP (applies to the layers whose LayerSpec.moe is True).

    ``shared_gate``: a sigmoid gate Linear(h, 1) on the shared expert's output (Qwen2-MoE,
    Qwen3-Next). ``router_bias``: the router Linear has a bias (gpt-oss). ``expert_bias``: every
    expert projection has a bias (gpt-oss). ``gated``: the experts are gated (SwiGLU: three
    matrices) or plain (Nemotron-H's ReLU^2: two).
    """

    n_experts: int  # routed experts
    n_active: int  # routed experts per token
    n_shared: int  # shared experts (always active)
    expert_intermediate_size: int
    shared_intermediate_size: int  # intermediate size of ONE shared expert
    shared_gate: bool = False
    router_bias: bool = False
    expert_bias: bool = False
    gated: bool = True

    def __post_init__(self) -> None:
        if self.n_experts <= 0 or not 0 < self.n_active <= self.n_experts:
            raise LcprofError(
                f"MoE needs 0 < experts per token ({self.n_active}) <= experts ({self.n_experts})"
            )
        if self.n_shared < 0 or self.expert_intermediate_size <= 0:
            raise LcprofError("MoE shared experts must be >= 0 and expert size positive")
        if self.n_shared and self.shared_intermediate_size <= 0:
            raise LcprofError("MoE shared expert size must be positive")
        if self.shared_gate and not self.n_shared:
            raise LcprofError("MoE shared-expert gate without a shared expert")

    @property
    def active_width(self) -> int:
        """Intermediate width one token passes through: its routed experts plus the shared ones."""
        return self.n_active * self.expert_intermediate_size + self.n_shared * self.shared_intermediate_size
