"""Where model files come from: a package's data files, chunks joined from packages, a local path, or the Hub.

Packages that ship model files are never imported (some come from unknown publishers): their files are located
with `importlib.util.find_spec`, and joined files are verified against a sha256 before anyone loads them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from fmstack.core.errors import ModelUnavailable

Progress = Callable[[int, int], None]


def package_file(spec: str) -> Path:
    """`package:MODULE/relative/path` -> the file inside the installed package, without importing it."""
    module, _, rel = spec.removeprefix("package:").partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        dist = module.replace("_", "-")
        raise ModelUnavailable(f"Package '{dist}' is not installed; install it with `pip install {dist}`.")
    path = Path(list(found.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise ModelUnavailable(f"Package '{module}' does not contain '{rel}'; reinstall it.")
    return path


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def verified(path: Path, sha256: str | None, progress: Progress | None = None) -> Path:
    """Check a file's hash once; a sidecar remembers the check until the file's size or mtime changes."""
    if not sha256:
        return path
    stat = path.stat()
    stamp = f"{sha256} {stat.st_size} {stat.st_mtime_ns}"
    sidecar = path.with_name(path.name + ".verified")
    if sidecar.exists() and sidecar.read_text() == stamp:
        return path
    actual = sha256_of(path, progress)
    if actual != sha256:
        raise ModelUnavailable(
            f"{path} has sha256 {actual}, expected {sha256}; refusing to load it. Reinstall the package that ships it."
        )
    if os.access(path.parent, os.W_OK):
        sidecar.write_text(stamp)
    return path


def join_chunks(specs: list[str], target: Path, sha256: str, progress: Progress | None = None) -> Path:
    """Join package chunks in order into `target`, atomically, and refuse the result unless its hash matches."""
    if target.exists():
        return verified(target, sha256, progress)
    parts = [package_file(s) for s in specs]
    total = sum(p.stat().st_size for p in parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    digest, done = hashlib.sha256(), 0
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise ModelUnavailable(
            f"Joining {len(parts)} chunks gave sha256 {digest.hexdigest()}, expected {sha256}; refusing it. "
            "Reinstall the chunk packages."
        )
    os.replace(tmp, target)
    stat = target.stat()
    target.with_name(target.name + ".verified").write_text(f"{sha256} {stat.st_size} {stat.st_mtime_ns}")
    return target


def hub_download(repo_id: str, filename: str | None, cache_dir: Path) -> Path:
    """Download from the Hugging Face Hub (cached after the first time).

    huggingface_hub retries with backoff for tens of seconds when the Hub cannot be reached; we probe the
    endpoint first so that an offline machine gets a clear answer at once.
    """
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    def fetch(local_only: bool) -> Path:
        if filename:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=local_only))
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=local_only))

    try:
        return fetch(local_only=True)
    except (LocalEntryNotFoundError, OSError):
        pass
    offline = f"Hugging Face Hub repo '{repo_id}' is not available offline and the Hub cannot be reached"
    hint = "Connect to the network once (it is cached afterwards), or point the model at a local path."
    if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
        raise ModelUnavailable(f"{offline}. {hint}")
    try:
        return fetch(local_only=False)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelUnavailable(f"{offline} ({type(exc).__name__}: {exc}). {hint}") from exc


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False
