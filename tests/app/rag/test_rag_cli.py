"""`fmstack rag …` in a real process tree: exit codes (0 ok, 1 a file skipped, 2 a user error), output and JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .helpers import write_formats

pytestmark = pytest.mark.slow


def fmstack(home, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {"FMSTACK_HOME": str(home), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "fmstack", "rag", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_ingest_search_list_eval_and_exit_codes(tmp_path):
    home = tmp_path / "home"
    folder = tmp_path / "docs"
    write_formats(folder)
    ok = fmstack(home, "ingest", str(folder), "--collection", "docs", "--by", "structure", "--chunk-tokens", "120")
    assert ok.returncode == 0, ok.stderr
    assert "5 added" in ok.stdout and "0 skipped" in ok.stdout

    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    again = fmstack(home, "ingest", str(folder), "--collection", "docs", "--by", "structure", "--chunk-tokens", "120")
    assert again.returncode == 1
    assert "5 unchanged" in again.stdout and "0 embedded" in again.stdout
    assert "skipped docs/broken.pdf: corrupt PDF" in again.stderr and "Traceback" not in again.stderr

    found = fmstack(home, "search", "Who invented the Fresnel lens?", "--collection", "docs", "-k", "2")
    assert found.returncode == 0 and "docs/lighthouse.html" in found.stdout.splitlines()[3]
    filtered = fmstack(home, "search", "order", "-c", "docs", "--meta", "team=finance")
    assert filtered.returncode == 0 and "Invoice 77" in filtered.stdout and "1002" not in filtered.stdout

    listed = fmstack(home, "list")
    assert listed.returncode == 0 and "docs" in listed.stdout and " 5 " in listed.stdout

    as_json = fmstack(home, "search", "Who invented the Fresnel lens?", "--collection", "docs", "-k", "2", "--json")
    hits = json.loads(as_json.stdout)  # nothing but the JSON on stdout
    assert as_json.returncode == 0 and len(hits) == 2 and hits[0]["source"] == "docs/lighthouse.html"
    assert {"text", "location", "similarity", "vector_rank", "keyword_rank", "chunk_id"} <= set(hits[0])
    (collection,) = json.loads(fmstack(home, "list", "--json").stdout)
    assert collection["name"] == "docs" and collection["documents"] == 5 and collection["chunks"] >= 5

    questions = tmp_path / "q.yaml"
    questions.write_text(
        "- {question: 'Who invented the Fresnel lens?', title: Lighthouse guide}\n"
        "- {question: 'How often is the kettle descaled?', source: 'docs/kettle.md'}\n"
        "- {question: 'How do I reset my router?', answerable: false}\n"
    )
    out = tmp_path / "eval.json"
    cases = tmp_path / "cases.jsonl"
    evaluated = fmstack(
        home, "eval", "-c", "docs", "--questions", str(questions), "-o", str(out), "--cases", str(cases)
    )  # noqa: E501
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(out.read_text())
    assert result["recall"]["@1"] == 1.0 and result["mrr"] == 1.0 and result["idk_when_unanswerable"] == 1.0
    rows = [json.loads(line) for line in cases.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["context"] and '<document id="1"' in rows[0]["messages"][-1]["content"]


def test_user_errors_exit_2_with_a_clear_message(tmp_path):
    home = tmp_path / "home"
    missing = fmstack(home, "ask", "anything", "--collection", "nope")
    assert missing.returncode == 2
    assert "No collection named 'nope'" in missing.stderr and "Traceback" not in missing.stderr
    assert fmstack(home, "search", "x", "--collection", "nope").returncode == 2
    magic = fmstack(home, "search", "x", "--collection", "nope", "--expand", "magic")
    assert magic.returncode == 2 and "expand must be one of none, hyde" in magic.stderr
    magic = fmstack(home, "calibrate", "--collection", "nope", "--expand", "magic")  # refused before any model runs
    assert magic.returncode == 2 and "expand must be one of none, hyde" in magic.stderr
    no_path = fmstack(home, "ingest", str(tmp_path / "absent"), "--collection", "docs")
    assert no_path.returncode == 2 and "no such file or folder" in no_path.stderr
    bad_name = fmstack(home, "ingest", str(tmp_path), "--collection", "bad name!")
    assert bad_name.returncode == 2 and "Invalid collection name" in bad_name.stderr
    bad_chunks = fmstack(home, "ingest", str(tmp_path), "--collection", "docs", "--chunk-tokens", "5000")
    assert bad_chunks.returncode == 2 and "--chunk-tokens" in bad_chunks.stderr
    assert fmstack(home, "delete", "nope").returncode == 2


def test_ask_streams_an_answer_and_prints_its_sources(tmp_path):
    home = tmp_path / "home"
    folder = tmp_path / "docs"
    write_formats(folder)
    assert fmstack(home, "ingest", str(folder), "-c", "docs", "--by", "structure").returncode == 0
    answer = fmstack(
        home, "ask", "Who invented the Fresnel lens?", "-c", "docs", "-m", "smollm2-135m-instruct", "--max-tokens", "40"
    )
    assert answer.returncode == 0, answer.stderr
    assert "[1] docs/lighthouse.html — § Lighthouses, chars" in answer.stdout
    idk = fmstack(home, "ask", "How do I bake banana bread?", "-c", "docs", "-m", "smollm2-135m-instruct")
    assert idk.returncode == 0 and "I don't know" in idk.stdout and "no sources" in idk.stdout
