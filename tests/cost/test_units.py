"""Token counts and dtype names as DESIGN.md defines them (k = 1024, M = 1048576)."""

from __future__ import annotations

import pytest

from lcprof.errors import LcprofError
from lcprof.units import dtype_bytes, dtype_name, fmt_bytes, parse_token_list, parse_tokens


@pytest.mark.parametrize("text,value", [
    ("131072", 131072), ("128k", 131072), ("128K", 131072), ("1M", 1_048_576), ("1m", 1_048_576),
    ("4k", 4096), ("1.5k", 1536), (" 32k ", 32768), ("1g", 1 << 30), (7, 7),
])
def test_parse_tokens(text, value):
    assert parse_tokens(text) == value


@pytest.mark.parametrize("bad", ["12x", "0", "-5", "1.3", "", "k", "1e3", "0.5k0", "4 k k", "17g"])
def test_parse_tokens_rejects(bad):
    with pytest.raises(LcprofError):
        parse_tokens(bad)


def test_parse_token_lists():
    assert parse_token_list("4k,8k,32k") == [4096, 8192, 32768]
    # doubling range: 128, 256, ..., 131072 -> 11 values (2^7 .. 2^17)
    assert parse_token_list("128..131072") == [1 << k for k in range(7, 18)]
    # b not a power-of-two multiple of a: a, 2a, 4a, ... then b itself
    assert parse_token_list("100..1000") == [100, 200, 400, 800, 1000]
    assert parse_token_list("1k,4k..16k") == [1024, 4096, 8192, 16384]
    assert parse_token_list("4k..4k") == [4096]
    assert parse_token_list("8k,4k,8k") == [4096, 8192]  # sorted, unique
    assert parse_token_list(["1k", "2k..4k"]) == [1024, 2048, 4096]
    for bad in ("4k..1k", "4k,,8k", "", "1k..x"):
        with pytest.raises(LcprofError):
            parse_token_list(bad)


def test_dtypes():
    assert [dtype_bytes(d) for d in ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")] == [4, 4, 2, 2, 1, 1]
    assert dtype_name("bfloat16") == "bf16" and dtype_name("float16") == "fp16"
    with pytest.raises(LcprofError, match="fp7"):
        dtype_name("fp7")
    # capacities are shown in binary units, saying which
    assert fmt_bytes(2 * (1 << 30)) == "2.00 GiB"


def test_parse_bytes_by_hand():
    from lcprof.units import parse_bytes, split_unit

    assert parse_bytes("8GiB") == 8 * 1073741824
    assert parse_bytes(" 512 mib ") == 512 * 1048576
    assert parse_bytes("8e9") == 8_000_000_000
    assert parse_bytes("1.5KiB") == 1536
    assert parse_bytes(None) is None
    for bad in ("8GB", "-1", "0.5", "lots"):
        with pytest.raises(LcprofError):
            parse_bytes(bad)
    assert split_unit("250ms", (("ms", 1e-3), ("s", 1.0))) == ("250", 1e-3)
    assert split_unit("7", (("ms", 1e-3),)) == ("7", 1.0)
