"""Layer kinds of the cost model beyond softmax attention: the linear-time mixers.

Each kind is a frozen dims dataclass answering the same questions -- ``params()``,
``ops(n, prefix, batch=, dtype=, state_dtype=)`` (FLOPs executed and useful, bytes; chunked prefill,
recurrent decode), ``state_shapes(tp)`` and ``state_bytes(dtype, state_dtype=, tp=)`` (constant in n),
``activation_steps(...)`` (bytes live at each step of lcprof's measured layer) -- so that consumers
ask the kind, never the model family. No torch.
"""

from __future__ import annotations

from lcprof.cost.kinds.deltanet import GatedDeltaNetDims
from lcprof.cost.kinds.lightning import LightningDims
from lcprof.cost.kinds.mamba1 import Mamba1Dims
from lcprof.cost.kinds.mamba2 import Mamba2Dims

MIXER_DIMS = {cls.kind: cls for cls in (Mamba1Dims, Mamba2Dims, GatedDeltaNetDims, LightningDims)}

__all__ = ["MIXER_DIMS", "GatedDeltaNetDims", "LightningDims", "Mamba1Dims", "Mamba2Dims"]
