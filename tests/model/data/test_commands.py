"""`fmstack data …` as a user runs it: the example pipeline scored against what was planted, exit codes, errors
that name the file and line, the other commands, and the report in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fmstack.model.data.synthetic import write_messy_corpus

REPO = Path(__file__).resolve().parents[3]
PII = ["@example.org", "9555 0142", "192.168.14.201", "4539 1488 0343 6467"]


def fmstack(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fmstack", "data", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """The README's example: the messy corpus through examples/data/pipeline.yaml."""
    root = tmp_path_factory.mktemp("example")
    shutil.copy(REPO / "examples" / "data" / "pipeline.yaml", root / "pipeline.yaml")
    truth = write_messy_corpus(root / "raw")
    return root, truth, fmstack("run", str(root / "pipeline.yaml"))


def _kept(out: Path) -> dict[str, str]:
    return {r["id"]: r["text"] for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()}


def _clusters(out: Path) -> dict[str, int]:
    cluster = {}
    for k, line in enumerate((out / "clusters.jsonl").read_text().splitlines()):
        c = json.loads(line)
        for ref in (c["kept"], *c["removed"]):
            cluster[ref["id"]] = k
    return cluster


@pytest.mark.slow
def test_example_pipeline_removes_what_was_planted(example):
    root, truth, proc = example
    assert proc.returncode == 1, proc.stderr  # finished, with the two planted bad lines rejected
    assert "b.jsonl:" in proc.stderr and "rejected.txt" in proc.stderr
    out = root / "out"
    kept = _kept(out)
    text = "\n".join(kept.values())
    assert not [g for g in truth["garbage"] + truth["foreign"] if g in kept]
    assert not [s for s in PII if s in text]
    assert "<EMAIL>" in text and "<CREDIT_CARD>" in text
    assert not [h for h in truth["html"] if h in kept and ("<" in kept[h] or "tracker" in kept[h])]
    cluster = _clusters(out)
    found = sum(1 for d, o in truth["duplicates"].items() if d in cluster and cluster.get(o) == cluster[d])
    assert found >= 0.9 * len(truth["duplicates"])
    lost = [i for i in truth["originals"] if i not in kept and i not in cluster]
    assert len(lost) <= 0.03 * len(truth["originals"])  # quality filters spare real articles
    rejected = (out / "rejected.txt").read_text().splitlines()
    lines = {(b["file"], b["line"]) for b in truth["broken_lines"]}
    assert {(r.split(":")[0], int(r.split(":")[1])) for r in rejected} == lines
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rejected"] == 2 and manifest["clean"]["dropped"]["language"] >= len(truth["foreign"])
    assert manifest["tokenize"]["pack"]["dtype"] == "uint16"


@pytest.mark.slow
def test_report_shows_its_plots_in_a_browser(example, browser):
    root, _, _ = example
    page = browser.new_page()
    page.goto((root / "out" / "report.html").as_uri())
    assert page.locator("h1").inner_text() == "Data pipeline report"
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 5 and min(widths) > 300  # lengths, rules, clusters, languages, tokens
    body = page.locator("body").inner_text()
    assert "language" in body and "Duplicate clusters" in body and "Rejected input (2" in body
    page.close()


def test_strict_stops_at_the_first_bad_record_with_exit_code_2(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n{oops\n{"text": "never read"}\n')
    proc = fmstack("clean", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out"), "--strict")
    assert proc.returncode == 2
    assert "in.jsonl:2: broken JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_pipeline_file_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("input: {paths: [raw/]}\noutput: {path: out/}\nclean:\n  pii: true\n  min_wrds: 20\n")
    proc = fmstack("run", str(bad))
    assert proc.returncode == 2 and f"{bad}:5: clean.min_wrds: unknown key" in proc.stderr
    bad.write_text("input: {paths: [raw/]}\noutput: {path: out/, format: csv}\n")
    proc = fmstack("run", str(bad))
    assert proc.returncode == 2 and f"{bad}:2: output.format" in proc.stderr
    bad.write_text("input: {paths: [nowhere/]}\noutput: {path: out/}\n")
    proc = fmstack("run", str(bad))
    assert proc.returncode == 2 and "nowhere: no such file or folder" in proc.stderr


def test_dedup_of_a_corpus_without_duplicates_keeps_everything(tmp_path):
    words = [f"word{i}" for i in range(2000)]
    docs = [" ".join(words[i * 40 : i * 40 + 40]) for i in range(50)]  # no shingle in common
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    proc = fmstack("dedup", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert len(_kept(tmp_path / "out")) == 50 and (tmp_path / "out" / "clusters.jsonl").read_text() == ""


def test_stats_reports_without_writing_data(tmp_path):
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"text": f"Sentence number {i} is here."}) + "\n" for i in range(30))
    )
    proc = fmstack("stats", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "stats"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "stats" / "manifest.json").read_text())
    assert manifest["counts"]["read"] == 30 and manifest["counts"]["after_clean"] == 30
    assert manifest["languages"] == {"en": 30} and manifest["outputs"] == []
    assert not list((tmp_path / "stats" / "data").glob("*")) and (tmp_path / "stats" / "report.html").exists()


def test_tokenize_trains_a_bpe_and_packs_blocks(tmp_path):
    from fmstack.model.data.tokenize import load_blocks

    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"text": f"The number {i} follows {i - 1}."}) + "\n" for i in range(400))
    )
    proc = fmstack(
        "tokenize",
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "tok"),
        "--train-vocab",
        "300",
        "--block-size",
        "16",
    )
    assert proc.returncode == 0, proc.stderr
    blocks = load_blocks(tmp_path / "tok" / "blocks")
    assert blocks.shape[1] == 16 and blocks.dtype.name == "uint16"
    assert (tmp_path / "tok" / "tokenizer" / "tokenizer.json").exists()
    proc = fmstack("tokenize", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "t2"))
    assert proc.returncode == 2 and "--tokenizer" in proc.stderr


def test_image_folder_dedup_from_the_command_line(tmp_path):
    from PIL import Image
    from skimage import data

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("astronaut", "camera", "coffee"):
        image = Image.fromarray(getattr(data, name)())
        image.save(folder / f"{name}.png")
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(
            folder / f"{name}-small.jpg", quality=40
        )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    proc = fmstack("dedup", "--images", str(folder), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1 and "broken.jpg" in proc.stderr
    kept = [json.loads(x)["id"] for x in (tmp_path / "out" / "images.jsonl").read_text().splitlines()]
    assert sorted(kept) == ["astronaut.png", "camera.png", "coffee.png"]
