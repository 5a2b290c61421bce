"""Distillation: a small student learns to do a larger teacher's job, so the job costs the student's price.

**Sequence level** (works across tokenizers). The teacher answers every prompt through the gateway — traced
under app `fmstack-distill`, `concurrency` requests at once so the llamacpp engine batches them — and each answer
is appended to `out/answers.jsonl` the moment it finishes (one `write` of a whole line on an O_APPEND file). A
killed run keeps every answer it finished: the same command resumes with the prompts not yet answered, matched by
a hash of their messages (so the prompts file may be reordered or extended). Answers that are empty or were cut at
`max_tokens` are dropped (a cut answer teaches the student to stop mid-sentence), and so are those a filter
rejects (an eval metric or judge; the CLI builds it, since `model` does not import `app`). The student is then
fine-tuned on the rest with `finetune` (LoRA or full) into `out/student/`.

`answers="reference"` trains on the prompts' own reference answers instead of the teacher's: the control that
separates what the teacher adds from what the prompts alone teach.

**Logit level** (teacher and student share a tokenizer). On the same conversations, the teacher's logits at every
assistant token are computed once and only their top k kept (float16 values and int32 ids in
`out/teacher_topk.safetensors`: 6·k bytes a token instead of 4 per vocabulary entry), then the teacher leaves
memory and the student minimises α·T²·KL(teacher_T ‖ student_T) over those k tokens + (1 − α)·cross-entropy on the
answer (Hinton et al. 2015; T² keeps the gradient scale independent of T). TRL's `DistillationTrainer` (GKD) is the
reference for the loss — its generalized JSD at β = 0 is this forward KL — but it does not fit here: it samples
the student on-policy and keeps the teacher in memory to score its full distribution at every step, where this
run needs the teacher once, on fixed answers, and a student small enough to train beside nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import StrictStr, field_validator

from fmstack.core.config import Settings
from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.core.registry import Registry
from fmstack.model.train import finetune as ft
from fmstack.model.train.chat_data import Message, Record, read_records, validate_record
from fmstack.model.train.configs import DistillConfig, FinetuneConfig

LEVELS = ("sequence", "logit")
ANSWERS = ("teacher", "reference")
APP = "fmstack-distill"

Progress = ft.Progress  # (stage, done, total, loss)
# (messages, answer, reference) of each kept answer -> whether to keep it; built by the CLI from an eval metric
AnswerFilter = Callable[[list[tuple[list[dict], str, str | None]]], list[bool]]


@dataclass(frozen=True)
class Prompt:
    id: str
    messages: list[dict[str, str]]
    reference: str | None
    line: int


class _PromptRecord(Record):
    prompt: StrictStr | None = None
    messages: list[Message] | None = None
    reference: StrictStr | None = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty")
        return value


def load_prompts(path: Path, need_reference: bool = False) -> list[Prompt]:
    """Prompts from JSONL/JSON: `{"prompt": "..."}` or `{"messages": [...]}`, each with an optional `reference`
    answer; messages that end with an assistant turn (an SFT file) take that turn as the reference. Duplicates are
    kept once. The first bad record is an error naming its line."""
    prompts: dict[str, Prompt] = {}
    for raw in read_records(path, "prompt or messages"):
        if "prompt" not in raw.data and "messages" not in raw.data:
            raise InvalidRequest(f"{path}:{raw.line}: messages: required field is missing (or give 'prompt').")
        record = validate_record(_PromptRecord, raw, path)
        prompt = _prompt(record, path)
        if need_reference and prompt.reference is None:
            raise InvalidRequest(
                f"{path}:{raw.line}: reference: required with --answers reference (a 'reference' field, or a "
                "final assistant turn in messages)."
            )
        prompts.setdefault(prompt.id, prompt)
    return list(prompts.values())


def _prompt(record: _PromptRecord, path: Path) -> Prompt:
    if record.prompt is not None and record.messages is not None:
        raise InvalidRequest(f"{path}:{record.line}: prompt: give either 'prompt' or 'messages', not both.")
    messages = (
        [{"role": "user", "content": record.prompt}]
        if record.prompt is not None
        else [{"role": m.role, "content": m.content} for m in record.messages or []]
    )
    reference = record.reference
    if messages and messages[-1]["role"] == "assistant":
        reference = reference if reference is not None else messages[-1]["content"]
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise InvalidRequest(f"{path}:{record.line}: messages: must end with the user's turn the teacher answers.")
    key = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    return Prompt(key, messages, reference, record.line)


def check_config(config: DistillConfig) -> None:
    """Option errors, before any file is read."""
    if config.level not in LEVELS:
        raise InvalidRequest(f"--level is '{config.level}'; use sequence or logit.")
    if config.answers not in ANSWERS:
        raise InvalidRequest(f"--answers is '{config.answers}'; use teacher or reference.")
    for flag, value in {"--max-tokens": config.max_tokens, "--concurrency": config.concurrency,
                        "--top-k": config.top_k, "--kd-temperature": config.kd_temperature}.items():  # fmt: skip
        if value <= 0:
            raise InvalidRequest(f"{flag} is {value}; it must be greater than 0.")
    if not 0 <= config.alpha <= 1:
        raise InvalidRequest(f"--alpha is {config.alpha}; use a weight in [0, 1] (1: KL only, 0: cross-entropy only).")
    if not config.prompts.is_file():
        raise InvalidRequest(f"--prompts {config.prompts}: no such file; give a JSONL file of prompts.")
    ft.check_config(replace(_finetune_config(config), data=config.prompts))  # out/student/ must be new
    if config.out.exists() and not config.out.is_dir():
        raise InvalidRequest(f"--out {config.out} is a file; give a folder for the run.")


def _finetune_config(config: DistillConfig) -> FinetuneConfig:
    """The student's fine-tune: merged into model/ so it can be exported and served like any model."""
    return FinetuneConfig(
        model=config.student, data=config.out / "train.jsonl", out=config.out / "student", method=config.method,
        eval_split=config.eval_split, epochs=config.epochs, steps=config.steps, lr=config.lr,
        batch_size=config.batch_size, grad_accum=config.grad_accum, max_length=config.max_length,
        lora_r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=config.target_modules, merge=True,
        name=config.name, seed=config.seed,
    )  # fmt: skip


def check_models(config: DistillConfig, settings: Settings) -> None:
    """The teacher and the student exist and can do their part (cheap: nothing is loaded)."""
    registry = Registry(settings)
    if config.answers == "teacher" or config.level == "logit":
        spec = registry.get(config.teacher)
        if spec.kind == "embedding":
            raise InvalidRequest(f"--teacher '{config.teacher}' is an embedding model; it cannot answer prompts.")
        if config.level == "logit" and spec.engine == "openai":
            raise InvalidRequest(f"--teacher '{config.teacher}' is remote: logit distillation needs its weights.")
        if spec.engine != "openai":
            spec.local_path(settings)  # its files are there (a missing file is one line now, not after the prompts)
    if not Path(config.student).expanduser().is_dir():
        spec = registry.get(config.student)
        if spec.engine not in ("llamacpp", "transformers"):
            raise InvalidRequest(f"--student '{config.student}' runs on {spec.engine}; it cannot be trained here.")
        spec.local_path(settings)
    if config.level == "logit":
        check_same_tokenizer(config.teacher, config.student, settings)


def check_same_tokenizer(teacher: str, student: str, settings: Settings) -> None:
    """Logit distillation compares distributions token by token: both vocabularies must be the same mapping."""
    a, b = vocabulary(teacher, settings), vocabulary(student, settings)
    if a != b:
        differ = next((t for t in sorted(a.keys() | b.keys()) if a.get(t) != b.get(t)), "?")
        raise InvalidRequest(
            f"--level logit: the teacher '{teacher}' ({len(a)} tokens) and the student '{student}' ({len(b)} "
            f"tokens) have different tokenizers (first difference: token {differ!r}); logits cannot be compared "
            "position by position. Use --level sequence, which works across tokenizers."
        )


def vocabulary(name: str, settings: Settings) -> dict[str, int]:
    """A model's token -> id mapping, read from its tokenizer files or GGUF metadata (no weights loaded)."""
    path = Path(name).expanduser()
    if not path.is_dir():
        spec = Registry(settings).get(name)
        path = spec.local_path(settings)
        if spec.engine == "llamacpp":
            return _gguf_vocabulary(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path).get_vocab()


def _gguf_vocabulary(path: Path) -> dict[str, int]:
    import gguf

    fields = gguf.GGUFReader(path).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    kinds = fields["tokenizer.ggml.token_type"].contents() if "tokenizer.ggml.token_type" in fields else []
    unused = {i for i, kind in enumerate(kinds) if kind == gguf.TokenType.UNUSED}  # rows padding the vocabulary
    return {token: i for i, token in enumerate(tokens) if i not in unused}


# ---------------------------------------------------------------- the teacher's answers


@dataclass
class Generation:
    """What the teacher run did: answers made now, found from an earlier run, failed (retried on the next run)."""

    answered: int = 0
    resumed: int = 0
    failed: int = 0
    first_error: str | None = None
    seconds: float = 0.0
    completion_tokens: int = 0

    @property
    def tokens_per_s(self) -> float | None:
        return round(self.completion_tokens / self.seconds, 1) if self.seconds else None


Complete = Callable[[list[dict]], Awaitable[Any]]  # messages -> the gateway's Answer (text, finish_reason, ...)


def read_answers(path: Path, identity: dict[str, Any]) -> dict[str, dict]:
    """Answers a previous run finished, by prompt id. A line torn by a kill is cut off; answers from another
    teacher or other generation settings are refused rather than mixed in."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with path.open("r+b") as f:
            f.truncate(whole)
    answers = {}
    for number, line in enumerate(data[:whole].splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise InvalidRequest(f"{path}:{number}: not an answer this command wrote; give a new --out.") from None
        if record["teacher"] != identity:
            raise InvalidRequest(
                f"{path}:{number}: answers from {record['teacher']}, not {identity}; resume with the same teacher "
                "and --max-tokens/--temperature, or give a new --out."
            )
        answers[record["id"]] = record
    return answers


async def generate_answers(
    complete: Complete, prompts: list[Prompt], path: Path, identity: dict[str, Any], concurrency: int,
    report: Progress,
) -> tuple[dict[str, dict], Generation]:  # fmt: skip
    """Answer every prompt not answered yet, `concurrency` at a time, appending each answer as it finishes."""
    answers = read_answers(path, identity)
    todo = [p for p in prompts if p.id not in answers]
    stats = Generation(resumed=sum(p.id in answers for p in prompts))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    limit, started = asyncio.Semaphore(concurrency), time.perf_counter()
    report("teacher answers", stats.resumed, len(prompts), None)

    async def one(prompt: Prompt) -> None:
        async with limit:
            try:
                answer = await complete(prompt.messages)
            except FmstackError as exc:
                if not stats.answered and not stats.resumed:
                    raise  # the very first answer failed: the teacher itself is the problem (exit 2, one line)
                stats.failed += 1
                stats.first_error = stats.first_error or exc.message
                return
        record = {"id": prompt.id, "line": prompt.line, "messages": prompt.messages, "answer": answer.text,
                  "finish_reason": answer.finish_reason, "completion_tokens": answer.completion_tokens,
                  "trace_id": answer.trace_id, "teacher": identity}  # fmt: skip
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())  # whole lines, never interleaved
        answers[prompt.id] = record
        stats.answered += 1
        stats.completion_tokens += answer.completion_tokens
        report("teacher answers", stats.resumed + stats.answered, len(prompts), None)

    try:
        if todo:
            await one(todo[0])  # alone first: a teacher that cannot load fails once, before the rest queue up
        await asyncio.gather(*(one(p) for p in todo[1:]))
    finally:
        os.fsync(fd)
        os.close(fd)
        stats.seconds = round(time.perf_counter() - started, 1)
    return answers, stats


def _teacher_answers(config: DistillConfig, settings: Settings, prompts: list[Prompt], report: Progress):
    from fmstack.gateway import CallContext, Gateway, generation_request

    params = {"max_tokens": config.max_tokens, "temperature": config.temperature, "seed": config.seed}
    identity = {"model": config.teacher, **params}
    gateway = Gateway.open(settings)

    async def complete(messages: list[dict]):
        request = generation_request(messages, params)
        return await gateway.complete(config.teacher, request, CallContext(app=APP), params=params)

    try:
        return asyncio.run(generate_answers(complete, prompts, config.out / "answers.jsonl", identity,
                                            config.concurrency, report))  # fmt: skip
    finally:
        gateway.close()


# ---------------------------------------------------------------- the training set


def training_records(
    prompts: list[Prompt], answers: dict[str, dict], config: DistillConfig, keep: AnswerFilter | None
) -> tuple[list[dict], dict[str, int]]:
    """SFT records (the prompt + the answer to learn), and how many prompts were dropped and why."""
    dropped = {"no_answer": 0, "empty": 0, "truncated": 0, "filtered": 0}
    kept: list[tuple[Prompt, str]] = []
    for prompt in prompts:
        record = answers.get(prompt.id)
        text = prompt.reference if config.answers == "reference" else (record or {}).get("answer")
        if text is None:
            dropped["no_answer"] += 1
        elif not text.strip():
            dropped["empty"] += 1
        elif config.answers == "teacher" and record["finish_reason"] == "length" and not config.keep_truncated:
            dropped["truncated"] += 1
        else:
            kept.append((prompt, text))
    if keep is not None and kept:
        verdicts = keep([(p.messages, text, p.reference) for p, text in kept])
        dropped["filtered"] = verdicts.count(False)
        kept = [item for item, ok in zip(kept, verdicts, strict=True) if ok]
    records = [{"messages": [*p.messages, {"role": "assistant", "content": text}]} for p, text in kept]
    if not records:
        raise InvalidRequest(f"no answer is left to train on ({_dropped_text(dropped)}).")
    return records, dropped


def _dropped_text(dropped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in dropped.items() if n) or "none dropped"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------- the run


def _silent(*_: Any) -> None:
    """Progress when nobody watches."""


def distill(
    config: DistillConfig, settings: Settings, progress: Progress | None = None, keep: AnswerFilter | None = None
) -> dict:
    """Validate, get the answers (teacher or reference), fine-tune or distill the student; returns the summary that
    is also written to `out/summary.json`."""
    report = progress or _silent
    check_config(config)
    prompts = load_prompts(config.prompts, need_reference=config.answers == "reference")
    check_models(config, settings)
    answers, generation = {}, None
    if config.answers == "teacher":
        answers, generation = _teacher_answers(config, settings, prompts, report)
    records, dropped = training_records(prompts, answers, config, keep)
    _write_jsonl(config.out / "train.jsonl", records)
    if config.level == "sequence":
        trained = ft.finetune(_finetune_config(config), settings, progress)
    else:
        from fmstack.model.train.distill_logits import train_on_logits

        trained = train_on_logits(config, _finetune_config(config), settings, report)
    summary = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "prompts": len(prompts),
        "teacher": asdict(generation) | {"tokens_per_s": generation.tokens_per_s} if generation else None,
        "dropped": dropped,
        "train_records": len(records),
        "student": trained,
    }
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
