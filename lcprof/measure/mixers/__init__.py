"""Measured linear-time mixer layers (torch): Mamba-1, Mamba-2 / SSD, Gated DeltaNet, lightning
attention, each built from the cost model's dims (:mod:`lcprof.cost.kinds`), each with a
step-by-step recurrent reference (:mod:`lcprof.measure.mixers.reference`)."""

from __future__ import annotations

from lcprof.cost.kinds import GatedDeltaNetDims, LightningDims, Mamba1Dims, Mamba2Dims
from lcprof.measure.mixers.common import MixerState
from lcprof.measure.mixers.deltanet import GatedDeltaNetMixer
from lcprof.measure.mixers.lightning import LightningAttention
from lcprof.measure.mixers.mamba1 import Mamba1Mixer
from lcprof.measure.mixers.mamba2 import Mamba2Mixer
from lcprof.measure.mixers import reference

MIXERS = {Mamba1Dims: Mamba1Mixer, Mamba2Dims: Mamba2Mixer, GatedDeltaNetDims: GatedDeltaNetMixer,
          LightningDims: LightningAttention}
RECURRENT = {Mamba1Dims: reference.mamba1_recurrent, Mamba2Dims: reference.mamba2_recurrent,
             GatedDeltaNetDims: reference.deltanet_recurrent, LightningDims: reference.lightning_recurrent}


def build_mixer(dims, *, seed: int = 0, **kw):
    """The torch layer of a mixer's dims (fails loudly on an unknown kind)."""
    try:
        cls = MIXERS[type(dims)]
    except KeyError:
        raise TypeError(f"no measured layer for {type(dims).__name__}") from None
    return cls(dims, seed=seed, **kw)


__all__ = ["MIXERS", "RECURRENT", "MixerState", "build_mixer", "Mamba1Mixer", "Mamba2Mixer", "GatedDeltaNetMixer",
           "LightningAttention"]
