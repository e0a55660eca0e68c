"""Hugging Face Hub ids: ``--model Qwen/Qwen3-30B-A3B`` resolves to the config.json of the local
Hub cache first, and downloads it (``huggingface_hub``, optional: ``pip install lcprof[hub]``) only
when it is not cached and the machine is online. ``HF_HUB_OFFLINE`` is honoured: an id that is not
cached while offline is refused in one line saying so.

The cache is the layout huggingface_hub writes: ``<cache>/models--<org>--<name>/refs/<revision>``
holds a commit hash, ``<cache>/models--<org>--<name>/snapshots/<commit>/config.json`` the file.
``<cache>`` is ``HF_HUB_CACHE``, else ``HUGGINGFACE_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from lcprof.errors import LcprofError

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")
_TRUE = ("1", "on", "yes", "true")


def looks_like_hub_id(text: str) -> bool:
    """``org/name`` (optionally ``@revision``) that is not a local path or a .json file."""
    return bool(_HUB_ID.match(text)) and not text.endswith(".json") and not Path(text).expanduser().exists()


def hub_cache_dir() -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cached_snapshot(repo_id: str, revision: str = "main") -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` holding a config.json, or None."""
    repo_dir = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snap = repo_dir / "snapshots" / commit
    return snap if (snap / "config.json").is_file() else None


def resolve_config(model_id: str) -> Path:
    """The local path of a Hub model's config.json: the cache, else a download when online."""
    repo_id, _, revision = model_id.partition("@")
    revision = revision or "main"
    snap = cached_snapshot(repo_id, revision)
    if snap is not None:
        return snap / "config.json"
    cache = hub_cache_dir()
    if hub_offline():
        raise LcprofError(f"Hub model {model_id!r} is not in the local cache ({cache}) and HF_HUB_OFFLINE is set: "
                          f"download it while online (huggingface-cli download {repo_id} config.json) or pass the "
                          "path of its config.json")
    try:
        import huggingface_hub
    except ImportError:
        raise LcprofError(f"Hub model {model_id!r} is not in the local cache ({cache}); downloading it needs "
                          "huggingface_hub (pip install 'lcprof[hub]'), or pass the path of its config.json") from None
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    why = _unreachable(endpoint)
    if why:  # huggingface_hub would retry for ~25 s, logging each attempt; say it once instead
        raise LcprofError(f"Hub model {model_id!r} is not in the local cache ({cache}) and {endpoint} cannot be "
                          f"reached ({why}): set HF_HUB_OFFLINE=1 and pass the path of its config.json, or retry "
                          "online")
    import logging  # only on the download path: it costs ~10 ms of every command's start

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would make a multi-line error
    try:
        path = huggingface_hub.hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=str(cache))
    except Exception as exc:  # network, gated, missing repo: one line, never a traceback
        kind = type(exc).__name__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
        raise LcprofError(f"Hub model {model_id!r}: could not download config.json ({kind}: {first})") from None
    finally:
        hub_log.setLevel(level)
    return Path(path)


def _unreachable(endpoint: str, timeout_s: float = 3.0) -> str:
    """Why ``endpoint``'s host cannot be reached over TCP within ``timeout_s`` ('' when it can)."""
    u = urllib.parse.urlsplit(endpoint)
    host, port = u.hostname or "", u.port or (80 if u.scheme == "http" else 443)
    if not host:
        return f"no host in {endpoint!r}"
    import socket  # only when the Hub is asked (keeps `import lcprof.spec` light)

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except socket.gaierror:
        return f"cannot resolve {host}"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or type(exc).__name__}"
