"""Hugging Face Hub ids through a cache folder laid out as huggingface_hub lays it out
(models--org--name/refs/main -> snapshots/<commit>/config.json), HF_HUB_OFFLINE, downloads (a stub
module stands in for huggingface_hub: this machine cannot reach the Hub), and the exact weight bytes
``show`` reads from safetensors headers."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from lcprof.cli import main
from lcprof.errors import LcprofError
from lcprof.spec import clear_cache, hub, load_model

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run(args):
    clear_cache()
    r = CliRunner().invoke(main, args, catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(repr(r.exception)) from r.exception
    return r


def make_cache(root: Path, repo: str, src: str, commit: str = COMMIT, ref: str = "main") -> Path:
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    shutil.copyfile(CONFIGS / src / "config.json", snap / "config.json")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_hub_id_resolves_from_the_cache_offline(cache):
    make_cache(cache, "Qwen/Qwen3-30B-A3B", "Qwen--Qwen3-30B-A3B")
    r = run(["kv", "--model", "Qwen/Qwen3-30B-A3B", "--n", "4k", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)[0]
    assert rec["model"] == "Qwen/Qwen3-30B-A3B"
    assert rec["kv_bytes_per_token"] == 48 * 4 * 128 * 2 * 2  # Qwen3-30B-A3B: 98304
    # the same file huggingface_hub itself finds in that cache
    hf = pytest.importorskip("huggingface_hub")
    assert hf.try_to_load_from_cache("Qwen/Qwen3-30B-A3B", "config.json", cache_dir=str(cache)) == \
        str(hub.resolve_config("Qwen/Qwen3-30B-A3B"))


def test_revision_and_hf_home(tmp_path, monkeypatch):
    root = tmp_path / "home" / "hub"
    root.mkdir(parents=True)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_cache(root, "openai/gpt-oss-20b", "openai--gpt-oss-20b", commit="c" * 40, ref="v1")
    assert load_model("openai/gpt-oss-20b@v1").n_layers == 24
    with pytest.raises(LcprofError, match="not in the local cache"):
        load_model("openai/gpt-oss-20b")  # refs/main absent


def test_not_cached_while_offline_is_one_line(cache):
    r = run(["kv", "--model", "Qwen/Qwen3-999B", "--n", "4k"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Qwen/Qwen3-999B" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert "not in the local cache" in lines[0]


def test_download_when_online_through_huggingface_hub(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("lcprof.spec.hub._unreachable", lambda endpoint: "")  # online
    calls = []

    def hf_hub_download(repo_id, filename, revision=None, cache_dir=None):
        calls.append((repo_id, filename, revision, cache_dir))
        return str(make_cache(Path(cache_dir), repo_id, "Qwen--Qwen3-8B") / filename)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    spec = load_model("Qwen/Qwen3-8B")
    assert spec.n_layers == 36 and calls == [("Qwen/Qwen3-8B", "config.json", "main", str(cache))]
    # now cached: no second download
    load_model("Qwen/Qwen3-8B")
    assert len(calls) == 1


def test_download_failure_is_one_line(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("lcprof.spec.hub._unreachable", lambda endpoint: "")  # the host answers, the download fails

    def hf_hub_download(*a, **k):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    r = run(["show", "org/missing-model"])
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert "org/missing-model" in line and "ConnectionError" in line and "more detail" not in line


def test_an_unreachable_hub_is_one_line_at_once(cache, monkeypatch):
    """Online by the environment but the Hub cannot be reached: one line naming why, without calling
    huggingface_hub (which would retry for ~25 s, logging every attempt)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid")
    monkeypatch.setattr("lcprof.spec.hub._unreachable", lambda endpoint: f"cannot resolve {endpoint[8:]}")
    called = []
    monkeypatch.setitem(sys.modules, "huggingface_hub",
                        types.SimpleNamespace(hf_hub_download=lambda *a, **k: called.append(a)))
    r = run(["show", "org/missing-model"])
    assert r.exit_code == 2 and not called
    (line,) = r.stderr.strip().splitlines()
    assert "https://hub.example.invalid cannot be reached (cannot resolve hub.example.invalid)" in line
    assert "HF_HUB_OFFLINE=1" in line


def test_reachability_probe_against_a_local_port():
    import socket

    from lcprof.spec.hub import _unreachable

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    assert _unreachable(f"http://127.0.0.1:{port}") == ""  # something listens
    srv.close()
    assert _unreachable(f"http://127.0.0.1:{port}").startswith(f"cannot connect to 127.0.0.1:{port}")
    assert _unreachable("https://") == "no host in 'https://'"


def test_without_huggingface_hub_installed(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import raises ImportError
    with pytest.raises(LcprofError, match=r"lcprof\[hub\]"):
        load_model("org/other-model")


# ------------------------------------------------------------------------------------------------
# safetensors headers -> exact weight bytes in `show`
# ------------------------------------------------------------------------------------------------

def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    """tensors: name -> (dtype, shape, bytes per element); data zero-filled."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dt, shape, size) in tensors.items():
        n = size
        for d in shape:
            n *= d
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_show_reports_checkpoint_bytes_per_dtype(cache):
    snap = make_cache(cache, "Qwen/Qwen3-8B", "Qwen--Qwen3-8B")
    write_safetensors(snap / "model-00001-of-00002.safetensors",
                      {"model.embed_tokens.weight": ("BF16", [151936, 64], 2), "a.scale": ("F32", [10], 4)})
    write_safetensors(snap / "model-00002-of-00002.safetensors", {"lm_head.weight": ("BF16", [151936, 64], 2)})
    (snap / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": 2 * 151936 * 64 * 2 + 40},
        "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                       "a.scale": "model-00001-of-00002.safetensors",
                       "lm_head.weight": "model-00002-of-00002.safetensors"}}))
    r = run(["show", "Qwen/Qwen3-8B", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)[0]
    assert rec["checkpoint_bf16_bytes"] == 2 * 151936 * 64 * 2  # two BF16 tensors, 2 B per element
    assert rec["checkpoint_bf16_elements"] == 2 * 151936 * 64
    assert rec["checkpoint_f32_bytes"] == 40
    assert rec["checkpoint_weight_bytes"] == 2 * 151936 * 64 * 2 + 40
    assert rec["checkpoint_index_total_size_bytes"] == 2 * 151936 * 64 * 2 + 40
    assert rec["checkpoint_files"] == "2/2 safetensors files read"
    # a shard missing: only the index's total is known
    (snap / "model-00002-of-00002.safetensors").unlink()
    rec = json.loads(run(["show", "Qwen/Qwen3-8B", "--format", "json"]).stdout)[0]
    assert rec["checkpoint_weight_bytes"] is None and rec["checkpoint_files"] == "1/2 safetensors files read"


def test_corrupt_safetensors_header_is_one_line(cache):
    snap = make_cache(cache, "Qwen/Qwen3-8B", "Qwen--Qwen3-8B")
    (snap / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!")
    r = run(["show", "Qwen/Qwen3-8B"])
    assert r.exit_code == 2 and "safetensors header" in r.stderr and len(r.stderr.strip().splitlines()) == 1
