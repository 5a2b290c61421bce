"""Pipelines: planted duplicates found, the same bytes whatever runs them, resumable after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmstack.model.data.pipeline import run_pipeline
from fmstack.model.data.spec import PipelineError, PipelineSpec
from fmstack.model.data.synthetic import pair_scores, planted_corpus


def write_corpus(folder: Path, n: int, files: int = 3, seed: int = 0) -> list[int]:
    """A planted corpus split over JSONL files; returns the group of each document in reading order."""
    corpus = planted_corpus(n, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // files)
    for k in range(files):
        rows = corpus.texts[k * per : (k + 1) * per]
        (folder / f"part{k}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    return corpus.groups


def spec(inputs: Path, out: Path, **extra) -> PipelineSpec:
    data = {
        "input": {"paths": [str(inputs)], "shard_mb": 0.05},
        "output": {"path": str(out)},
        "dedup": {"threshold": 0.5, "ngram": 3},
        **extra,
    }
    return PipelineSpec.model_validate(data)


def predicted_groups(out: Path, n: int, files: int, per: int) -> list[int]:
    """Each document's cluster (the index of its kept document), read back from clusters.jsonl."""

    def index(ref: dict) -> int:
        return int(Path(ref["source"]).stem.removeprefix("part")) * per + ref["line"] - 1

    labels = list(range(n))
    for line in (out / "clusters.jsonl").read_text().splitlines():
        c = json.loads(line)
        for r in c["removed"]:
            labels[index(r)] = index(c["kept"])
    return labels


def output_bytes(out: Path) -> dict[str, bytes]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in {"report.html"})
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def test_planted_duplicates_are_found_and_counted(tmp_path):
    groups = write_corpus(tmp_path / "in", 1500)
    result = run_pipeline(spec(tmp_path / "in", tmp_path / "out"))
    m = result.manifest
    scores = pair_scores(predicted_groups(tmp_path / "out", 1500, 3, 500), groups)
    assert scores["f1"] > 0.97, scores
    assert m["counts"]["read"] == 1500 and m["counts"]["rejected"] == 0
    assert abs(m["counts"]["after_dedup"] - len(set(groups))) <= 0.02 * len(set(groups))
    assert m["dedup"]["exact_removed"] + m["dedup"]["near_removed"] == 1500 - m["counts"]["after_dedup"]
    import hashlib

    for o in m["outputs"]:
        assert hashlib.sha256((tmp_path / "out" / o["path"]).read_bytes()).hexdigest() == o["sha256"]
    assert not (tmp_path / "out" / ".work").exists()


def test_same_bytes_with_one_worker_two_workers_and_a_second_run(tmp_path):
    write_corpus(tmp_path / "in", 600)
    run_pipeline(spec(tmp_path / "in", tmp_path / "one", workers=1))
    run_pipeline(spec(tmp_path / "in", tmp_path / "two", workers=2))
    a, b = output_bytes(tmp_path / "one"), output_bytes(tmp_path / "two")
    assert a == b and len(a) > 5
    again = run_pipeline(spec(tmp_path / "in", tmp_path / "two", workers=2))
    assert again.timings == {"total": 0.0}  # finished already: nothing redone
    assert output_bytes(tmp_path / "two") == b


def test_a_different_pipeline_does_not_mix_into_an_existing_output(tmp_path):
    write_corpus(tmp_path / "in", 100)
    run_pipeline(spec(tmp_path / "in", tmp_path / "out"))
    other = spec(tmp_path / "in", tmp_path / "out").model_copy(update={"dedup": None})
    with pytest.raises(PipelineError, match="different pipeline"):
        run_pipeline(other)
    assert run_pipeline(other, force=True).manifest["dedup"] is None


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fmstack", "data", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


@pytest.mark.slow
def test_kill_9_in_the_middle_then_resume_gives_the_uninterrupted_output(tmp_path):
    write_corpus(tmp_path / "in", 6000, files=12)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "input: {paths: [in], shard_mb: 0.1}\noutput: {path: out}\ndedup: {threshold: 0.5, ngram: 3}\nworkers: 1\n"
    )
    reference = tmp_path / "ref.yaml"
    reference.write_text(pipeline.read_text().replace("path: out", "path: ref"))
    proc = _cli("run", str(pipeline))
    markers = tmp_path / "out" / ".work" / "a"
    deadline = time.monotonic() + 120
    while len(list(markers.glob("*.json"))) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(markers.glob("*.json")))
    assert 4 <= done_before < 40, "the kill must land in the middle of the run"
    assert not (tmp_path / "out" / "manifest.json").exists()
    resumed = _cli("run", str(pipeline))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert _cli("run", str(reference)).wait(timeout=300) == 0
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "ref")


@pytest.mark.slow
def test_ray_engine_gives_identical_output(tmp_path):
    write_corpus(tmp_path / "in", 600)
    run_pipeline(spec(tmp_path / "in", tmp_path / "local"))
    ray = pytest.importorskip("ray")
    try:
        run_pipeline(spec(tmp_path / "in", tmp_path / "ray", engine="ray", workers=2))
    finally:
        ray.shutdown()
    assert output_bytes(tmp_path / "local") == output_bytes(tmp_path / "ray")
