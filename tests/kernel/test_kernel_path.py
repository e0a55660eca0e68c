"""Which device path of the striped kernel runs (kernels.striped_attn.resolve_path); CPU only."""

import pytest

from kernels import striped_attn


def test_default_is_sm80_until_sm90_is_verified(monkeypatch):
    monkeypatch.delenv(striped_attn.ENV_PATH, raising=False)
    assert striped_attn.DEFAULT_PATH == "sm80"
    assert striped_attn.resolve_path() == "sm80"


def test_env_and_argument(monkeypatch):
    monkeypatch.setenv(striped_attn.ENV_PATH, "sm90")
    assert striped_attn.resolve_path() == "sm90"
    assert striped_attn.resolve_path("sm80") == "sm80"  # the argument wins
    monkeypatch.setenv(striped_attn.ENV_PATH, " SM80 ")
    assert striped_attn.resolve_path() == "sm80"


def test_auto_without_cuda_is_sm80(monkeypatch):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv(striped_attn.ENV_PATH, "auto")
    assert striped_attn.resolve_path() == "sm80"


def test_unknown_path_names_its_source(monkeypatch):
    monkeypatch.setenv(striped_attn.ENV_PATH, "sm100")
    with pytest.raises(ValueError, match=r"'sm100' \(from \$LCPROF_RING_KERNEL\).*sm80, sm90 or auto"):
        striped_attn.resolve_path()
    with pytest.raises(ValueError, match=r"'x' \(from path\)"):
        striped_attn.resolve_path("x")


def test_sources_exist():
    for src in striped_attn.SOURCES:
        assert src.is_file(), src
