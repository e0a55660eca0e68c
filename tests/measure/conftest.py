"""Fixtures of the measurement tests (the configs live in ``support.tiny_models``)."""

from __future__ import annotations

import json

import pytest

from support.tiny_models import TINY_CONFIGS, tiny_spec


@pytest.fixture
def spec_of():
    return tiny_spec


@pytest.fixture
def tiny_config_path(tmp_path):
    """Write a tiny config.json and return its path (for subprocess / CLI tests)."""

    def write(name: str = "gqa"):
        path = tmp_path / f"tiny-{name}" / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(TINY_CONFIGS[name]))
        return path

    return write
