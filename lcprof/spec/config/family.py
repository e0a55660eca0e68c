"""What a family module declares for each model_type it reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

#: The shape fields a published config of a mature family always states. A config lacking one is
#: refused rather than given transformers' default (a reference model's size).
CORE = frozenset({"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                  "intermediate_size", "max_position_embeddings"})


@dataclass(frozen=True)
class Family:
    """One model_type: transformers' defaults for it (``defaults``, from ``source``), the fields
    known not to change cost (``inert``), the fields refused when absent (``required``), and the
    builder that turns a ``Reader`` into a ``ModelSpec``."""

    model_type: str
    source: str
    defaults: dict
    build: Callable
    inert: frozenset = field(default_factory=frozenset)
    required: frozenset = CORE
    text_of: tuple[str, ...] = ()  # multimodal wrapper model_types whose text_config this reads
