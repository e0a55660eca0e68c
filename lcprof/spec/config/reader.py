"""Typed, validated access to one ``config.json`` dict, with transformers' defaults and a record of
which fields were read.

Every value is checked as it is read (type, finite, range) and a bad one is refused with the file
and field named: never a traceback, never a value silently replaced (``attention_bias: "false"`` is
refused, not read as true). A field absent from the config takes the default of its model_type's
table (transformers' default, cited in the family module); a field in the family's ``required`` set
is refused when absent even where transformers has a default, because that default is a reference
model's size and a config without it is incomplete.

``unknown()`` lists the fields that were neither read nor declared inert -- the loader refuses them
unless the user passes ``--allow-unknown``.
"""

from __future__ import annotations

import math
from typing import Any

from lcprof.errors import LcprofError

_MISSING = object()

#: Fields of any config.json that never change what inference costs (token ids, dropout, init,
#: training-only settings, bookkeeping, generation defaults saved by old transformers versions).
GLOBAL_INERT = frozenset({
    "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype",
    "_name_or_path", "_from_model_config", "_commit_hash", "_attn_implementation", "_attn_implementation_autoset",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "initializer_range", "init_std", "initializer_factor", "rms_norm_eps", "layer_norm_eps",
    "layer_norm_epsilon", "norm_eps", "attention_dropout", "hidden_dropout", "dropout", "attn_pdrop",
    "resid_pdrop", "embd_pdrop", "classifier_dropout", "use_cache", "output_router_logits",
    "router_aux_loss_coef", "router_z_loss_coef", "aux_loss_alpha", "seq_aux", "router_jitter_noise",
    "tokenizer_class", "quantization_config", "pretraining_tp", "return_dict", "output_attentions",
    "output_hidden_states", "torchscript", "use_return_dict", "id2label", "label2id", "num_labels",
    "problem_type", "task_specific_params", "finetuning_task", "prefix", "chunk_size_feed_forward",
    "is_decoder", "add_cross_attention", "tie_encoder_decoder", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "tf_legacy_loss",
    "use_bfloat16", "pruned_heads", "num_logits_to_keep",
    "logits_to_keep", "use_mamba_kernels", "residual_in_fp32", "rescale_prenorm_residual",
    "mlp_only_layers_comment", "_lcprof",
})


class Reader:
    """One config dict of one model_type: ``defaults`` is transformers' table for that model_type,
    ``inert`` the fields of that model_type known not to change cost, ``required`` the fields
    refused when absent."""

    def __init__(self, cfg: dict, where: str, model_type: str, defaults: dict | None = None,
                 inert: frozenset | set = frozenset(), required: frozenset | set = frozenset()):
        self.cfg = cfg
        self.where = where
        self.model_type = model_type
        self.defaults = dict(defaults or {})
        self.inert = frozenset(inert)
        self.required = frozenset(required)
        self.used: set[str] = set()

    # ----- raw access ---------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        """The config states ``key`` (even as null)."""
        return key in self.cfg

    def given(self, key: str) -> bool:
        """The config states ``key`` with a non-null value."""
        return self.cfg.get(key) is not None

    def touch(self, *keys: str) -> None:
        """Mark fields as understood without reading them (read elsewhere, or checked to be inert)."""
        self.used.update(keys)

    def raw(self, key: str) -> Any:
        """The stated value, else the model_type's default; refused when required or without one."""
        self.used.add(key)
        if key in self.cfg:
            return self.cfg[key]
        if key in self.required:
            raise LcprofError(f"{self.where}: config is missing required field {key!r}")
        if key in self.defaults:
            return self.defaults[key]
        raise LcprofError(f"{self.where}: config is missing required field {key!r} "
                          f"(model_type {self.model_type!r} has no default for it)")

    def fail(self, key: str, what: str, value: Any) -> LcprofError:
        return LcprofError(f"{self.where}: field {key!r} must be {what}, got {value!r}")

    # ----- typed access -------------------------------------------------------------------------
    def int(self, key: str, *, min: int = 1, null: bool = False) -> int | None:
        """An integer >= ``min`` (``null``: None is allowed and returned as is)."""
        v = self.raw(key)
        return self.as_int(key, v, min=min, null=null)

    def as_int(self, key: str, v: Any, *, min: int = 1, null: bool = False) -> int | None:
        if v is None:
            if null:
                return None
            raise self.fail(key, f"an integer >= {min}", v)
        # a JSON number with a fraction or exponent is a float: refused, as transformers' typed
        # configs refuse it (an int field given 4096.0 or 1e30)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, "an integer", v)
        if v < min:
            raise self.fail(key, f"an integer >= {min}", v)
        return v

    def float(self, key: str, *, gt: float | None = None, ge: float | None = None, le: float | None = None,
              null: bool = False) -> float | None:
        v = self.raw(key)
        return self.as_float(key, v, gt=gt, ge=ge, le=le, null=null)

    def as_float(self, key: str, v: Any, *, gt: float | None = None, ge: float | None = None,
                 le: float | None = None, null: bool = False) -> float | None:
        if v is None:
            if null:
                return None
            raise self.fail(key, "a number", v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(key, "a finite number", v)
        v = float(v)
        if gt is not None and not v > gt:
            raise self.fail(key, f"a number > {gt:g}", v)
        if ge is not None and not v >= ge:
            raise self.fail(key, f"a number >= {ge:g}", v)
        if le is not None and not v <= le:
            raise self.fail(key, f"a number <= {le:g}", v)
        return v

    def bool(self, key: str, *, null: bool = False) -> bool | None:
        v = self.raw(key)
        if v is None and null:
            return None
        if not isinstance(v, bool):
            raise self.fail(key, "true or false", v)
        return v

    def str(self, key: str, choices: tuple[str, ...] | None = None, *, null: bool = False) -> str | None:
        v = self.raw(key)
        if v is None and null:
            return None
        if not isinstance(v, str):
            raise self.fail(key, "a string", v)
        if choices is not None and v not in choices:
            raise self.fail(key, "one of " + ", ".join(choices), v)
        return v

    def list(self, key: str, *, length: int | None = None, null: bool = False) -> list | None:
        v = self.raw(key)
        if v is None and null:
            return None
        if not isinstance(v, list):
            raise self.fail(key, "a list", v)
        if length is not None and len(v) != length:
            raise LcprofError(f"{self.where}: field {key!r} has {len(v)} entries for {length} layers")
        return v

    def int_list(self, key: str, *, length: int | None = None, min: int = 0, null: bool = False) -> list[int] | None:
        v = self.list(key, length=length, null=null)
        if v is None:
            return None
        return [self.as_int(f"{key}[{i}]", x, min=min) for i, x in enumerate(v)]

    def dict(self, key: str, *, null: bool = True) -> dict | None:
        v = self.raw(key)
        if v is None and null:
            return None
        if not isinstance(v, dict):
            raise self.fail(key, "an object", v)
        return v

    # ----- what was not understood --------------------------------------------------------------
    def unknown(self) -> list[str]:
        return sorted(k for k in self.cfg if k not in self.used and k not in self.inert and k not in GLOBAL_INERT)
