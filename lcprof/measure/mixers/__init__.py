"""Measured linear-time mixer layers (torch): Mamba-1, Mamba-2 / SSD, Gated DeltaNet, Kimi Delta
Attention, lightning attention, LFM2's short convolution, each built from its spec
(:mod:`lcprof.spec.mixers`), each with a
step-by-step recurrent reference (:mod:`lcprof.measure.mixers.reference`)."""

from __future__ import annotations

from lcprof.measure.mixers.common import MixerState
from lcprof.measure.mixers.deltanet import GatedDeltaNetMixer
from lcprof.measure.mixers.kda import KimiDeltaMixer
from lcprof.measure.mixers.lightning import LightningAttention
from lcprof.measure.mixers.mamba1 import Mamba1Mixer
from lcprof.measure.mixers.mamba2 import Mamba2Mixer
from lcprof.measure.mixers.shortconv import ShortConvMixer
from lcprof.measure.mixers import reference

#: Mixer kind (``LayerSpec.mixers`` names) -> its measured layer and its recurrent reference.
MIXERS = {"mamba": Mamba1Mixer, "mamba2": Mamba2Mixer, "gated_deltanet": GatedDeltaNetMixer, "kda": KimiDeltaMixer,
          "lightning": LightningAttention, "short_conv": ShortConvMixer}
RECURRENT = {"mamba": reference.mamba1_recurrent, "mamba2": reference.mamba2_recurrent,
             "gated_deltanet": reference.deltanet_recurrent, "kda": reference.kda_recurrent,
             "lightning": reference.lightning_recurrent, "short_conv": reference.short_conv_recurrent}


def build_mixer(spec, *, seed: int = 0, **kw):
    """The torch layer of a mixer spec (``lcprof.spec.mixers``); fails loudly on an unknown kind."""
    try:
        cls = MIXERS[spec.kind]
    except (KeyError, AttributeError):
        raise TypeError(f"no measured layer for {type(spec).__name__}") from None
    return cls(spec, seed=seed, **kw)


__all__ = ["MIXERS", "RECURRENT", "MixerState", "build_mixer", "Mamba1Mixer", "Mamba2Mixer",
           "GatedDeltaNetMixer", "KimiDeltaMixer", "LightningAttention",
           "ShortConvMixer"]
