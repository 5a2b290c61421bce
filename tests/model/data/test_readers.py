"""Readers: every format, shards that cover a file exactly once, and bad records reported with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmstack.core.errors import FmstackError
from fmstack.model.data.documents import Document
from fmstack.model.data.readers import Fields, plan_shards, read_shard


def _read_all(paths: list[Path], shard_bytes: int = 32 << 20, fields: Fields = Fields()):
    docs, rejected = [], []
    for shard in plan_shards(paths, shard_bytes):
        for item in read_shard(shard, fields):
            (docs if isinstance(item, Document) else rejected).append(item)
    return docs, rejected


def test_jsonl_shards_cover_every_line_once_with_true_line_numbers(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i} " + "x" * (i % 97)}) + "\n" for i in range(5000)))
    docs, rejected = _read_all([path], shard_bytes=10_000)
    assert len(plan_shards([path], 10_000)) > 20
    assert not rejected
    assert [d.line for d in docs] == list(range(1, 5001))
    assert all(d.text.startswith(f"document {d.line - 1} ") for d in docs)


def test_bad_records_are_reported_with_file_and_line_and_reading_goes_on(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"text": "good one"}\n{broken\n\n{"text": 5}\n"just a string"\n{"body": "no text"}\n'
        b'{"text": "caf\xe9 latin-1"}\n{"text": "good two", "id": "x7", "lang": "en"}\n'
    )
    docs, rejected = _read_all([path], fields=Fields(id="id"))
    assert [d.text for d in docs] == ["good one", "good two"]
    assert docs[1].id == "x7" and docs[1].meta == {"lang": "en"} and docs[0].id.endswith("mixed.jsonl:1")
    lines = {r.line: r.reason for r in rejected}
    assert set(lines) == {2, 4, 5, 6, 7}
    assert "broken JSON" in lines[2] and "must be a string" in lines[4] and "not UTF-8" in lines[7]
    assert str(rejected[0]).endswith("mixed.jsonl:2: " + lines[2])


def test_parquet_csv_text_folder_and_saved_dataset(tmp_path):
    pq.write_table(pa.table({"text": ["p1", "p2", "p3"], "n": [1, 2, 3]}), tmp_path / "a.parquet", row_group_size=2)
    (tmp_path / "b.csv").write_text('text,label\n"multi\nline",1\nplain,0\n')
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "one.md").write_text("# Title\nbody")
    (folder / "two.txt").write_text("second")
    (folder / "bad.txt").write_bytes(b"\xff\xfe\x00broken")
    from datasets import Dataset

    Dataset.from_dict({"text": ["d1", "d2"]}).save_to_disk(str(tmp_path / "saved"))
    paths = [tmp_path / "a.parquet", tmp_path / "b.csv", folder, tmp_path / "saved"]
    docs, rejected = _read_all(paths)
    assert [d.text for d in docs] == ["p1", "p2", "p3", "multi\nline", "plain", "# Title\nbody", "second", "d1", "d2"]
    assert docs[2].line == 3 and docs[2].meta == {"n": 3}  # row numbers run across row groups
    assert docs[4].line == 4  # the CSV line the record ends on
    assert len(rejected) == 1 and "bad.txt" in rejected[0].source


def test_missing_and_unknown_inputs_are_user_errors(tmp_path):
    with pytest.raises(FmstackError, match="no such file"):
        plan_shards([tmp_path / "nope.jsonl"])
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(FmstackError, match="unknown format"):
        plan_shards([tmp_path / "x.docx"])


def test_empty_file_gives_nothing_and_no_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert _read_all([tmp_path / "empty.jsonl"]) == ([], [])
