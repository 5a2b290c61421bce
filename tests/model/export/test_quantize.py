"""`fmstack model quantize` and `fmstack model compare` on a tiny Llama trained here (rows of 256, so every k-quant
applies): two quantizations are written and registered, and the comparison measures each in its own process with
numbers in a sensible order (smaller file, higher perplexity, larger divergence); an importance matrix is collected
from a calibration text and changes what llama.cpp writes; bad input is one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from fmstack import cli
from fmstack.cli import app
from fmstack.core.config import get_settings
from fmstack.core.registry import Registry
from fmstack.model.export.imatrix import importance_matrix
from tests.conftest import TEST_MODEL
from tests.model import tiny_models

runner = CliRunner()
HELD_OUT = Path(__file__).parents[3] / "examples" / "quantize" / "held_out.txt"
SUITE = """
name: tiny-news
params: {temperature: 0, max_tokens: 8}
metrics: [token_f1]
cases:
  - {id: a, input: "The Australian government said", reference: "the government"}
  - {id: b, input: "Police said on Tuesday", reference: "police said"}
  - {id: c, input: "The Prime Minister", reference: "the minister"}
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at the terminal width; tests read whole error lines."""
    monkeypatch.setattr(cli.console, "width", 250)
    monkeypatch.setattr(cli.err, "width", 250)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    return tiny_models.llama(folder / "model", tiny_models.tokenizer(folder / "tokenizer"), hidden=256, steps=30)


@pytest.fixture()
def one_thread(home, monkeypatch) -> Path:
    """A fresh FMSTACK_HOME; llama.cpp on one thread (two spinning threads crawl on a busy 2-core machine)."""
    monkeypatch.setenv("FMSTACK_THREADS", "1")
    return home


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_quantize_to_two_types_and_compare(tiny, one_thread, tmp_path):
    quantized = invoke("model", "quantize", str(tiny), "--quant", "q8_0,q2_k", "--name", "tiny", "--json")
    variants = {v["name"]: v for v in quantized["variants"]}
    assert list(variants) == ["tiny-f16", "tiny-q8_0", "tiny-q2_k"]  # the checkpoint's f16 export comes first
    assert variants["tiny-q2_k"]["tensor_types"].get("Q2_K") and not variants["tiny-q2_k"]["fallbacks"]
    registry = Registry(get_settings())
    assert all(registry.get(name).engine == "llamacpp" for name in variants)

    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "report"
    report = invoke("model", "compare", *variants, "--suite", str(suite), "--text", str(HELD_OUT), "--out",
                    str(out), "--streams", "4", "--price-per-hour", "0.5", "--json")  # fmt: skip
    rows = {v["name"]: v for v in report["variants"]}
    f16, q8, q2 = rows["tiny-f16"], rows["tiny-q8_0"], rows["tiny-q2_k"]
    assert report["reference"] == "tiny-f16" and report["metric"] == "token_f1"
    assert f16["size_bytes"] > q8["size_bytes"] > q2["size_bytes"]
    assert f16["bits_per_weight"] > q8["bits_per_weight"] > q2["bits_per_weight"]
    for row in rows.values():
        for field in ("load_s", "peak_rss_mb", "prefill_tokens_per_s", "decode_tokens_per_s", "streams_tokens_per_s"):
            assert row[field] > 0, (row["name"], field)
        assert row["text_tokens"] == f16["text_tokens"] > 500  # every variant scored on the same tokens
        assert row["task"]["n"] == 3 and row["seconds_per_1k_requests"] > 0 and row["cost_per_1k_requests"] > 0
    assert f16["kl_mean"] == 0 and f16["top1_agreement"] == 1
    assert q2["perplexity"] > f16["perplexity"]
    assert q2["kl_mean"] > q8["kl_mean"] > 0
    assert q2["top1_agreement"] <= q8["top1_agreement"] <= 1
    assert report["verdict"] in rows and report["eval_run"].startswith("run-")
    assert (out / "compare.png").stat().st_size > 0
    assert json.loads((out / "compare.json").read_text())["verdict"] == report["verdict"]
    assert f"Verdict: {report['verdict']}" in (out / "compare.html").read_text()


@pytest.mark.slow
def test_importance_matrix_from_a_calibration_text_changes_the_low_bit_file(tiny, one_thread, tmp_path):
    invoke("model", "quantize", str(tiny), "--quant", "q2_k", "--name", "plain", "--json")
    variants = invoke("model", "quantize", "plain-f16", "--quant", "q2_k", "--name", "weighted", "--imatrix",
                      str(HELD_OUT), "--json")  # fmt: skip
    assert variants["imatrix"]["tensors"] == 15  # 7 matrices in each of 2 layers, and the output head
    assert variants["imatrix"]["tokens"] > 1000 and variants["variants"][0]["imatrix"]
    settings = get_settings()
    plain = gguf.GGUFReader(Registry(settings).get("plain-q2_k").local_path(settings))
    weighted = gguf.GGUFReader(Registry(settings).get("weighted-q2_k").local_path(settings))
    changed = [
        a.name for a, b in zip(plain.tensors, weighted.tensors, strict=True) if not np.array_equal(a.data, b.data)
    ]
    assert any(name.startswith("blk.") for name in changed)

    importance = importance_matrix(Registry(settings).get("plain-f16").local_path(settings), HELD_OUT.read_text(), 1)
    query = importance.values["blk.0.attn_q.weight"]
    assert query.shape == (256,) and (query > 0).all()  # a mean square per input column
    assert np.allclose(query, importance.values["blk.0.attn_k.weight"])  # q, k and v read the same input


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["TINY", "--quant", "q4_z"], "--quant 'q4_z' is not a type llama.cpp knows"),
        (["TEXT", "--quant", "q8_0"], "not a GGUF file or a Hugging Face checkpoint folder"),
        (["EMPTY", "--quant", "q8_0"], "no config.json, so not a Hugging Face checkpoint or a model"),
        ([TEST_MODEL, "--quant", "q4_k_m"], "is already quantized (q4_1); quantizing it again compounds"),
        (["TINY", "--quant", "iq2_xs"], "--quant iq2_xs needs an importance matrix"),
        (["TINY", "--quant", "q2_k", "--imatrix", "MISSING"], "no such file; give a plain-text calibration file"),
        (["no-such-model", "--quant", "q8_0"], "The model 'no-such-model' does not exist"),
    ],
)
def test_bad_quantize_input_is_one_line_and_exit_2(args, expected, home, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    paths = {"TINY": tmp_path / "empty", "TEXT": tmp_path / "notes.txt", "EMPTY": tmp_path / "empty",
             "MISSING": tmp_path / "missing.txt"}  # fmt: skip
    if "TINY" in args:  # a checkpoint folder that passes the source check, so the quant check is what fails
        (tmp_path / "empty" / "config.json").write_text("{}")
    result = runner.invoke(app, ["model", "quantize", *[str(paths.get(a, a)) for a in args]])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(home.glob("models/*.gguf*"))


@pytest.mark.parametrize(
    ("models", "flags", "expected"),
    [
        ([TEST_MODEL], [], "give at least two different models to compare"),
        ([TEST_MODEL, "all-minilm-l6-v2"], [], "'all-minilm-l6-v2' runs on sentence-transformers"),
        ([TEST_MODEL, "nope"], [], "The model 'nope' does not exist"),
        ([TEST_MODEL, "smollm2-priced"], ["--metric", "bleu"], "--metric 'bleu' is not in suite 'tiny-news'"),
        ([TEST_MODEL, "smollm2-priced"], ["--text", "MISSING"], "--text MISSING: no such file"),
        ([TEST_MODEL, "smollm2-priced"], ["--reference", "other"], "--reference 'other' is not one of the models"),
    ],
)
def test_bad_compare_input_is_one_line_and_exit_2_before_measuring(models, flags, expected, home, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    result = runner.invoke(app, ["model", "compare", *models, "--suite", str(suite), "--out", str(tmp_path / "r"),
                                 *flags])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_quantize_and_compare_help_have_examples():
    for command in ("quantize", "compare"):
        help_text = runner.invoke(app, ["model", command, "--help"]).output
        assert f"Example: fmstack model {command}" in help_text
