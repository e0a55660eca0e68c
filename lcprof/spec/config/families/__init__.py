"""Family loaders, one module per family group; ``FAMILIES`` maps model_type -> ``Family``."""

from __future__ import annotations

from lcprof.spec.config.families import (classic, cohere, decoders, deepseek, hybrid, kimi, qwen_next, reordered,
                                         ssm)
from lcprof.spec.config.family import Family


def _index() -> dict[str, Family]:
    out: dict[str, Family] = {}
    for mod in (decoders, reordered, cohere, deepseek, qwen_next, ssm, hybrid, kimi, classic):
        for fam in mod.FAMILIES:
            if fam.model_type in out:
                raise RuntimeError(f"model_type {fam.model_type!r} is declared twice")
            out[fam.model_type] = fam
    return out


FAMILIES: dict[str, Family] = _index()
#: multimodal wrapper model_type -> the text model_type its text_config holds
WRAPPERS: dict[str, str] = {w: fam.model_type for fam in FAMILIES.values() for w in fam.text_of}
REFUSED: dict[str, str] = dict(classic.REFUSED)
