import pytest

from lcprof.errors import LcprofError
from lcprof.plan import parse_mix, parse_seconds


def test_parse_seconds():
    assert parse_seconds("2s") == 2.0
    assert parse_seconds("500ms") == pytest.approx(0.5)
    assert parse_seconds("50us") == pytest.approx(5e-5)
    assert parse_seconds("0.25") == 0.25
    assert parse_seconds(None) is None
    for bad in ("", "fast", "-1s", "0", "1h"):
        with pytest.raises(LcprofError):
            parse_seconds(bad)


def test_parse_mix():
    assert parse_mix("8k:0.15,2k:0.8,32k:0.05") == [(2048, 0.8), (8192, 0.15), (32768, 0.05)]
    assert parse_mix("1k:0.3333333,2k:0.3333333,4k:0.3333334")  # within 1e-6
    for bad, msg in (("2k:0.8,8k:0.1", "sum to 0.9"), ("2k", "LENGTH:SHARE"), ("2k:x", "malformed share"),
                     ("2k:0.5,2k:0.5", "twice"), ("2k:1.5,4k:-0.5", "in \\(0, 1\\]")):
        with pytest.raises(LcprofError, match=msg):
            parse_mix(bad)
