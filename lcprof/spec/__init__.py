"""What a model *is*: frozen, validated spec dataclasses built from a HuggingFace ``config.json``.

Bundled presets are ``config.json`` files too (``lcprof/data/models/*.json``, each with an extra
``_lcprof`` block naming its source), and they go through exactly the same loader as a user's file.

* ``layers``    -- ``LayerSpec`` (one layer's token mixers, attention mask, MLP) and ``AttnDims``;
* ``mixers``    -- Mamba-1, Mamba-2, Gated DeltaNet, lightning attention and the DSA indexer:
  projections, other parameters and per-request state, the one source of truth for each kind;
* ``attention`` -- MLA ranks and what the attention variants cost; ``moe`` -- MoE shapes;
  ``rope`` -- RoPE scaling; ``model`` -- ``ModelSpec``; ``params`` -- parameter counts;
* ``config``    -- the config.json loader, one module per family (``config/families/``);
* ``registry``  -- presets, files and Hub ids (``hub``); ``weights`` -- safetensors headers;
  ``describe``  -- the record ``lcprof show`` prints.
No torch here.
"""

from lcprof.spec.attention import QK_NORMS, MLASpec
from lcprof.spec.config import set_allow_unknown, spec_from_config, supported_model_types
from lcprof.spec.describe import describe
from lcprof.spec.layers import ATTN_KINDS, MIXER_KINDS, AttnDims, LayerSpec
from lcprof.spec.mixers import (MIXER_SPECS, GatedDeltaNetSpec, IndexerSpec, KimiDeltaSpec, LightningSpec, Linear,
                                Mamba2Spec, MambaSpec, ShortConvSpec)
from lcprof.spec.model import ModelSpec
from lcprof.spec.moe import MoESpec
from lcprof.spec.params import param_counts
from lcprof.spec.registry import DATA_DIR, MODELS_DIR, clear_cache, list_presets, load_model, preset_aliases
from lcprof.spec.rope import ROPE_TYPES, RopeSpec

__all__ = [
    "ATTN_KINDS", "DATA_DIR", "MIXER_KINDS", "MIXER_SPECS", "MODELS_DIR", "QK_NORMS", "ROPE_TYPES",
    "AttnDims", "GatedDeltaNetSpec", "IndexerSpec", "KimiDeltaSpec", "LayerSpec", "LightningSpec", "Linear", "MLASpec",
    "Mamba2Spec", "MambaSpec", "ModelSpec", "MoESpec", "RopeSpec", "ShortConvSpec",
    "clear_cache", "describe", "list_presets", "load_model", "param_counts", "preset_aliases",
    "set_allow_unknown", "spec_from_config", "supported_model_types",
]
