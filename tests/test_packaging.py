"""`pip install .` (not editable) ships everything the server needs: migrations, the registry, the web pages."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_built_wheel_runs_from_site_packages(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp_path / "w")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "w").glob("fmstack-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    script = f"""
import fmstack
from fastapi.testclient import TestClient
from fmstack.server import create_app
assert fmstack.__file__.startswith({str(target)!r}), fmstack.__file__
with TestClient(create_app()) as client:
    assert "fmstack" in client.get("/").text
    assert client.get("/static/chat.js").status_code == 200
    assert client.get("/v1/models").json()["data"]
    assert client.get("/api/traces").json() == {{"object": "list", "data": []}}
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "FMSTACK_HOME": str(tmp_path / "home"), "PATH": "/usr/bin"},
    )
    assert result.stdout.strip() == "ok", result.stderr
