"""Exact weight bytes of a checkpoint from its safetensors headers (or its index), without reading
the tensors: a safetensors file starts with an 8-byte little-endian header length and a JSON header
giving every tensor's dtype, shape and byte range. No torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from lcprof.errors import LcprofError

_MAX_HEADER_BYTES = 100 << 20


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of one .safetensors file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise LcprofError(f"{path}: not a safetensors file (shorter than its header length)")
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or n > _MAX_HEADER_BYTES:
                raise LcprofError(f"{path}: not a safetensors file (header length {n})")
            header = fh.read(n)
    except OSError as exc:
        raise LcprofError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        out = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LcprofError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(out, dict):
        raise LcprofError(f"{path}: safetensors header is not an object")
    return out


def checkpoint_weights(folder: str | Path) -> dict | None:
    """Weight bytes and element counts per dtype of the safetensors files in ``folder``, or None when
    there are none. With an index whose shards are not all present, only the index's total is known."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    shards: list[Path]
    total_from_index = None
    if index.is_file():
        try:
            idx = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            raise LcprofError(f"cannot read {index}: not valid JSON") from None
        meta = idx.get("metadata") or {}
        total_from_index = meta.get("total_size")
        names = sorted(set((idx.get("weight_map") or {}).values()))
        shards = [folder / nm for nm in names]
    else:
        shards = sorted(folder.glob("*.safetensors"))
    present = [p for p in shards if p.is_file()]
    if not present and total_from_index is None:
        return None
    by_dtype: dict[str, int] = {}
    elems: dict[str, int] = {}
    for p in present:
        for key, t in read_safetensors_header(p).items():
            if key == "__metadata__":
                continue
            try:
                a, b = t["data_offsets"]
                dt = str(t["dtype"]).lower()
                numel = 1
                for d in t["shape"]:
                    numel *= int(d)
            except (KeyError, TypeError, ValueError):
                raise LcprofError(f"{p}: malformed safetensors entry {key!r}") from None
            by_dtype[dt] = by_dtype.get(dt, 0) + int(b) - int(a)
            elems[dt] = elems.get(dt, 0) + numel
    complete = len(present) == len(shards) and bool(shards)
    return {
        "files": len(shards),
        "files_present": len(present),
        "complete": complete,
        "bytes_by_dtype": by_dtype,
        "elements_by_dtype": elems,
        "total_bytes": sum(by_dtype.values()) if complete else None,
        "index_total_size": int(total_from_index) if total_from_index is not None else None,
    }
