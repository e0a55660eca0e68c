"""Read a HuggingFace ``config.json`` into a ``ModelSpec``, as transformers reads it, or refuse it.

One module per family group (``families/``) knows, for each model_type it supports, every field that
changes cost and transformers' default for each (one table per model_type). Everything else is
refused in one line naming the file, the model_type and the fields:

* an unknown model_type (or one lcprof knows and does not support: learned or ALiBi positions,
  encoder-decoder, encoder-only);
* a known model_type carrying fields neither read nor known to be inert -- unless
  ``allow_unknown`` (CLI ``--allow-unknown``), which proceeds and warns, listing what was ignored;
* a value of the wrong type, non-finite, out of range, or inconsistent (heads not dividing).

A multimodal wrapper (``text_config``) is read for its text model -- Qwen2-VL's and Qwen2.5-VL's flat configs
(``FLAT_WRAPPERS``) for their top-level text fields --; the spec says so (``text_model_of``) and its notes say
the vision tower is not counted.
"""

from __future__ import annotations

import warnings

from lcprof.errors import LcprofError
from lcprof.spec.config.families import FAMILIES, REFUSED, WRAPPERS
from lcprof.spec.config.reader import GLOBAL_INERT, Reader
from lcprof.spec.model import ModelSpec

__all__ = ["FAMILIES", "REFUSED", "WRAPPERS", "allow_unknown_fields", "set_allow_unknown", "spec_from_config",
           "supported_model_types"]

_POLICY = {"allow_unknown": False}


def set_allow_unknown(allow: bool) -> None:
    """Process-wide default of ``spec_from_config(allow_unknown=...)`` (the CLI's ``--allow-unknown``)."""
    _POLICY["allow_unknown"] = bool(allow)


def allow_unknown_fields() -> bool:
    return _POLICY["allow_unknown"]


def supported_model_types() -> list[str]:
    return sorted(FAMILIES)


#: multimodal model types whose Hub configs are flat (the text model's fields at the top level, beside a
#: vision_config): model_type -> the text model_type; the keys that belong to the wrapper alone
FLAT_WRAPPERS = {"qwen2_vl": "qwen2_vl_text", "qwen2_5_vl": "qwen2_5_vl_text"}
_WRAPPER_ONLY = frozenset({"vision_config", "image_token_id", "video_token_id", "vision_start_token_id",
                           "vision_end_token_id", "vision_token_id"})


def _text_config(cfg: dict, where: str) -> tuple[dict, str | None]:
    """(the text model's config, the wrapper's model_type or None)."""
    tc = cfg.get("text_config")
    if tc is None and cfg.get("model_type") in FLAT_WRAPPERS:  # Qwen2-VL / Qwen2.5-VL as published: flat
        inner = {k: v for k, v in cfg.items() if k not in _WRAPPER_ONLY}
        inner["model_type"] = FLAT_WRAPPERS[cfg["model_type"]]
        return inner, str(cfg["model_type"])
    if tc is None:
        return cfg, None
    if not isinstance(tc, dict):
        raise LcprofError(f"{where}: text_config must be an object, got {tc!r}")
    wrapper = cfg.get("model_type")
    inner = dict(tc)
    if "model_type" not in inner:
        if wrapper not in WRAPPERS:
            raise LcprofError(f"{where}: text_config has no model_type and lcprof does not know wrapper "
                              f"model_type {wrapper!r}")
        inner["model_type"] = WRAPPERS[wrapper]
    # the lm_head belongs to the wrapper: its tie_word_embeddings (and dtype) win when it states them
    for k in ("tie_word_embeddings", "torch_dtype", "dtype"):
        if k in cfg and k not in inner:
            inner[k] = cfg[k]
        elif k == "tie_word_embeddings" and k in cfg:
            inner[k] = cfg[k]
    return inner, str(wrapper) if wrapper is not None else None


def spec_from_config(cfg: dict, name: str | None = None, *, where: str | None = None,
                     allow_unknown: bool | None = None) -> ModelSpec:
    """Build a ModelSpec from a HuggingFace ``config.json`` dict (a ``text_config`` wrapper is read for
    its text model). ``allow_unknown``: proceed past fields lcprof does not understand, with a
    warning naming them (default: ``set_allow_unknown``'s, False)."""
    if not isinstance(cfg, dict):
        raise LcprofError(f"{where or name or 'config'}: config must be a JSON object")
    allow = allow_unknown_fields() if allow_unknown is None else bool(allow_unknown)
    meta = cfg.get("_lcprof", {}) or {}
    where = where or meta.get("name") or name or "config"
    if cfg.get("is_encoder_decoder") is True:
        raise LcprofError(f"{where}: encoder-decoder models are not supported (lcprof prices decoder-only inference)")
    text, wrapper = _text_config(cfg, where)
    mt = text.get("model_type")
    if not isinstance(mt, str) or not mt:
        raise LcprofError(f"{where}: config has no model_type; lcprof reads: {', '.join(supported_model_types())}")
    if mt in REFUSED:
        raise LcprofError(f"{where}: model_type {mt!r}: {REFUSED[mt]}")
    fam = FAMILIES.get(mt)
    if fam is None:
        raise LcprofError(f"{where}: unknown model_type {mt!r}: lcprof does not know what its fields cost; "
                          f"it reads: {', '.join(supported_model_types())}")
    name = name or meta.get("name") or str(cfg.get("_name_or_path") or mt or "custom")
    notes = []
    if wrapper is not None:
        where_from = "text_config" if "text_config" in cfg else "its top-level text fields"
        notes.append(f"Text model of a {wrapper} checkpoint (read from {where_from}); the vision tower and "
                     "projector are not counted.")
    r = Reader(text, where, mt, fam.defaults, fam.inert, fam.required)
    ctx = {"name": name, "meta": meta, "notes": notes, "wrapper": wrapper,
           "dtype": text.get("torch_dtype") or text.get("dtype"),
           "config": {k: v for k, v in text.items() if k != "_lcprof"}}
    spec = fam.build(r, ctx)
    unknown = r.unknown()
    if unknown:
        if not allow:
            raise LcprofError(f"{where}: model_type {mt!r} carries field(s) lcprof does not understand and that "
                              f"may change cost: {', '.join(unknown)} (pass --allow-unknown to ignore them)")
        warnings.warn(f"{where}: ignoring field(s) lcprof does not understand (--allow-unknown): "
                      f"{', '.join(unknown)}; costs may be wrong", stacklevel=2)
        spec = spec.replace(ignored_fields=tuple(unknown),
                            notes=(spec.notes + f" Ignored (--allow-unknown): {', '.join(unknown)}.").strip())
    return spec


assert "model_type" in GLOBAL_INERT
