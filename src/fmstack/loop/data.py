"""Step 1, data: the gate's suite from the app's reviews, and SFT/DPO files from its traces since the last loop.

The suite comes first because it is cheap and everything after it is not: an app with too few reviewed answers
stops here, before minutes of training. A share of the reviewed answers (by a hash of the trace id, so the same
answers stay held out from loop to loop) is kept out of training: records whose prompt is a held-out case's are
dropped from the training files, so the gate does not score the candidate on answers it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError

from fmstack.app.review.suite import suite_from_reviews
from fmstack.core.errors import FmstackError
from fmstack.core.store.schema import utcnow
from fmstack.engines.messages import Message
from fmstack.loop.context import LoopContext, LoopStopped, StepResult
from fmstack.model.data.from_traces import export_traces


def collect(ctx: LoopContext) -> StepResult:
    """Write gate.yaml and sft.jsonl / dpo.jsonl into the run's folder; stop when either side is too thin."""
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    held_out = _gate_suite(ctx)
    until = utcnow()
    ctx.runs.update(ctx.run.id, until=until)
    counts = {fmt: _training_file(ctx, fmt, held_out, until) for fmt in ctx.config.data.formats}
    total = sum(n for n, _ in counts.values())
    window = f"judged since {ctx.run.since:%Y-%m-%d %H:%M:%S} UTC" if ctx.run.since else "from the first trace"
    kinds = ", ".join(f"{n} {fmt} records" + (f" ({detail})" if detail else "") for fmt, (n, detail) in counts.items())
    if total < ctx.config.data.min_records:
        raise LoopStopped(
            "stopped",
            f"{total} training record(s) from {ctx.app}'s traces {window} ({kinds}); data.min_records is "
            f"{ctx.config.data.min_records}. Collect more feedback and reviews, or widen data.window to all.",
        )
    output = {"gate_suite": str(ctx.workdir / "gate.yaml"), "gate_cases": len(held_out), "until": until.isoformat(),
              **{f"{fmt}_records": n for fmt, (n, _) in counts.items()}}  # fmt: skip
    for fmt, (n, _) in counts.items():
        if n:
            output[f"{fmt}_file"] = str(ctx.workdir / f"{fmt}.jsonl")
    held = f"{len(held_out)} reviewed answers held out for the gate"
    return StepResult(output, f"{kinds} from {ctx.app}'s traces {window}; {held}")


def _gate_suite(ctx: LoopContext) -> set[str]:
    """gate.yaml: the held-out reviewed answers as a suite; returns their prompts' keys (kept out of training)."""
    spec = _reviews_spec(ctx)
    data = ctx.config.data
    cases = spec["cases"]
    if data.holdout > 0:
        cases = [c for c in cases if _share(f"{data.seed}:{_case_key(c)}") < data.holdout]
    cases = cases[-ctx.config.gate.max_cases :]  # the newest: closest to what users ask now
    gate = ctx.config.gate
    if len(cases) < gate.min_cases:
        raise LoopStopped(
            "stopped",
            f"{len(cases)} of {len(spec['cases'])} approved or edited reviews of {ctx.app} held out for the gate "
            f"(data.holdout {data.holdout}); gate.min_cases is {gate.min_cases}. Review more answers "
            f"(fmstack review next), or raise data.holdout.",
        )
    spec.update(
        name=f"loop-{ctx.run.id}-{ctx.app}", cases=cases, params={"temperature": 0.0, "max_tokens": gate.max_tokens}
    )
    if gate.metrics:
        spec["metrics"] = list(gate.metrics)
    (ctx.workdir / "gate.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120))
    if data.holdout == 0:
        ctx.report("data", "note: data.holdout is 0, so the gate scores answers the candidate is trained on")
        return set()
    return {key for c in cases if (key := prompt_key(c["messages"])) is not None}


def _reviews_spec(ctx: LoopContext) -> dict[str, Any]:
    """Every approved or edited answer of the app as a suite (`eval suite from-reviews`), read back as data."""
    path = ctx.workdir / "reviews.yaml"
    try:
        with ctx.sessions() as session:
            suite_from_reviews(session, ctx.app, path)
    except FmstackError as exc:
        raise LoopStopped("stopped", f"no suite to gate on: {exc.message}") from None
    return yaml.safe_load(path.read_text())


def _training_file(ctx: LoopContext, fmt: str, held_out: set[str], until: datetime) -> tuple[int, str]:
    """`fmt`.jsonl from the traces last judged in the window [since, until) (feedback given late on an old answer
    counts when it is given), without held-out prompts: (records, what went in or why none). The window is closed
    at `until`, where the next loop's begins, so no judgement is trained on twice."""
    path = ctx.workdir / f"{fmt}.jsonl"
    try:
        export = export_traces(ctx.sessions, fmt, path, app=ctx.app, since=ctx.run.since, until=until,
                               min_rating=ctx.config.data.min_rating, by_judgement=True)  # fmt: skip
    except FmstackError:
        path.unlink(missing_ok=True)
        return 0, "none matched"
    kept = [r for r in export.records if _record_prompt(r) not in held_out]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    if not kept:
        path.unlink()
    dropped = len(export.records) - len(kept)
    detail = ", ".join(f"{n} {kind}" for kind, n in export.counts.items())
    return len(kept), detail + (f"; {dropped} dropped: a held-out prompt" if dropped else "")


def _record_prompt(record: dict) -> str | None:
    messages = record["prompt"] if "prompt" in record else record["messages"][:-1]
    return prompt_key(messages)


def prompt_key(messages: list) -> str | None:
    """The messages as from-traces normalizes them ({role, content}), so a suite case and a training record of the
    same request compare equal; None for messages it would not train on."""
    try:
        plain = [Message.model_validate(m).as_template_input() for m in messages]
    except (ValidationError, FmstackError, TypeError):
        return None
    return json.dumps(plain, sort_keys=True, ensure_ascii=False)


def _case_key(case: dict) -> str:
    """What decides whether a reviewed answer is held out: its question, so a question asked twice is held out
    both times, and the same questions are held out on every loop and in every store (a trace id is random)."""
    return prompt_key(case["messages"]) or case["id"]


def _share(text: str) -> float:
    """A stable number in [0, 1) for `text`."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
