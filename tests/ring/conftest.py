"""Fixtures of the ring tests (the reference lives in ``support.attention_reference``)."""

import pytest

from support.attention_reference import full_attention_reference


@pytest.fixture
def full_attention():
    return full_attention_reference
