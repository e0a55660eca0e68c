"""Bundled presets, user config files and Hugging Face Hub ids -> ``ModelSpec``.

Presets are HF ``config.json`` files in ``lcprof/data/models/`` (with an ``_lcprof`` block naming
their source); they go through the same loader as a user's file. Registries fail loudly on
duplicate names and say what names exist.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

from lcprof.errors import LcprofError
from lcprof.spec import hub
from lcprof.spec.config import allow_unknown_fields, spec_from_config
from lcprof.spec.model import ModelSpec

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MODELS_DIR = DATA_DIR / "models"


@lru_cache(maxsize=1)
def _preset_index() -> dict[str, Path]:
    """Preset and alias name -> file. Fails loudly on duplicate names."""
    index: dict[str, Path] = {}
    for path in sorted(MODELS_DIR.glob("*.json")):
        with open(path) as fh:
            meta = (json.load(fh).get("_lcprof") or {})
        names = [meta.get("name", path.stem), *meta.get("aliases", [])]
        if path.stem not in names:
            names.append(path.stem)
        for nm in names:
            key = nm.lower()
            if key in index and index[key] != path:
                raise RuntimeError(f"preset name {nm!r} is defined twice: {index[key].name}, {path.name}")
            index[key] = path
    return index


def list_presets() -> list[str]:
    """Canonical preset names (file stems), sorted."""
    return sorted({p.stem for p in _preset_index().values()})


def preset_aliases() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for nm, path in _preset_index().items():
        if nm != path.stem:
            out.setdefault(path.stem, []).append(nm)
    return out


def read_config(path: Path) -> dict:
    """A config.json (or the config.json in a folder) as a dict; one line on any failure."""
    if path.is_dir():
        path = path / "config.json"
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise LcprofError(f"cannot read config {str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise LcprofError(f"cannot read config {str(path)!r}: it is a directory") from None
    except PermissionError:
        raise LcprofError(f"cannot read config {str(path)!r}: permission denied") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LcprofError(f"cannot read config {str(path)!r}: not valid JSON ({exc})") from None
    except ValueError as exc:  # e.g. numbers too large to convert
        raise LcprofError(f"cannot read config {str(path)!r}: {exc}") from None


@lru_cache(maxsize=64)
def _load_cached(key: str, allow_unknown: bool) -> ModelSpec:
    return _load(key, allow_unknown)


def _from_file(p: Path, label: str, name: str, allow_unknown: bool) -> ModelSpec:
    cfg = read_config(p)
    spec = spec_from_config(cfg, name=name or "custom", where=label, allow_unknown=allow_unknown)
    folder = p if p.is_dir() else p.parent
    return dataclasses.replace(spec, checkpoint_dir=str(folder))


def _load(name_or_path: str, allow_unknown: bool) -> ModelSpec:
    index = _preset_index()
    key = name_or_path.lower()
    if key in index:
        path = index[key]
        return spec_from_config(read_config(path), name=path.stem, where=f"preset {path.stem}",
                                allow_unknown=allow_unknown)
    p = Path(name_or_path).expanduser()
    if p.exists() or p.suffix == ".json" or name_or_path.startswith((".", "/", "~")):
        stem = p.name if p.is_dir() else (p.parent.name if p.name == "config.json" else p.stem)
        return _from_file(p, str(name_or_path), stem, allow_unknown)
    if hub.looks_like_hub_id(name_or_path):
        cfg_path = hub.resolve_config(name_or_path)
        return _from_file(cfg_path, f"{name_or_path} ({cfg_path})", name_or_path.partition("@")[0], allow_unknown)
    if "/" in name_or_path:
        return _from_file(p, str(name_or_path), p.stem, allow_unknown)
    import difflib  # only for an unknown name: kept off every command's start

    close = difflib.get_close_matches(key, list(index), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise LcprofError(
        f"unknown model {name_or_path!r}{hint} (see `lcprof models`, pass a path to a config.json, "
        "or a Hugging Face id such as Qwen/Qwen3-8B)"
    )


def load_model(name_or_path: str | ModelSpec, *, allow_unknown: bool | None = None) -> ModelSpec:
    """A preset name or alias, a path to a HuggingFace ``config.json`` (or a folder holding one), or a
    Hugging Face Hub id (``org/name[@revision]``; the local cache first). ``allow_unknown``: proceed
    past fields lcprof does not understand, with a warning (default: the CLI's ``--allow-unknown``)."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    allow = allow_unknown_fields() if allow_unknown is None else bool(allow_unknown)
    key = str(name_or_path)
    if key.lower() not in _preset_index() and hub.looks_like_hub_id(key):
        return _load(key, allow)  # the cache and the environment may change between calls
    return _load_cached(key, allow)


def clear_cache() -> None:
    """Forget loaded specs (tests that rewrite config files or the environment)."""
    _load_cached.cache_clear()
    _preset_index.cache_clear()
