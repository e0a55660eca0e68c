"""Which device path of the striped kernel runs (lcprof.kernels.striped_attn.resolve_path); CPU only."""

import pytest

from lcprof.kernels import striped_attn


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


def test_the_kernel_folder_is_no_python_package():
    """kernels/ holds the CUDA sources only: a top-level Python package named `kernels` (ours, shipped or
    found from the repository root) would shadow Hugging Face's `kernels`, which transformers >= 5.25
    imports -- every transformers model then fails to import. The Python side is lcprof.kernels."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert not (root / "kernels" / "__init__.py").exists()
    assert not list((root / "kernels").glob("*.py")) or all(
        p.name.startswith("check_") for p in (root / "kernels").glob("*.py"))  # scripts run by path only
    assert '"kernels*"' not in (root / "pyproject.toml").read_text()
    assert all(src.is_file() for src in striped_attn.SOURCES)  # lcprof.kernels finds the checkout's sources
