"""OpenAI response objects for one call: a whole chat or text completion, or its SSE chunks, with one choice per
`n`, usage, and log-probabilities in each API's own layout."""

from __future__ import annotations

from collections import defaultdict

from fmstack.engines import tools
from fmstack.engines.base import Delta
from fmstack.gateway import Call


class Shape:
    object_name = ""
    chunk_name = ""

    def __init__(self, call: Call, body):
        self.call, self.body = call, body

    @property
    def indexes(self) -> range:
        return range(getattr(self.body, "n", 1) or 1)

    def base(self, name: str) -> dict:
        return {
            "id": self.call.id,
            "object": name,
            "created": self.call.created,
            "model": self.call.spec.name,
            "system_fingerprint": f"fmstack-{self.call.spec.engine}",
        }

    def usage(self) -> dict:
        f = self.call.finish
        p, c = (f.prompt_tokens, f.completion_tokens) if f else (0, 0)
        usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        if f and f.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": f.cached_tokens}
        return usage

    def usage_chunk(self) -> dict:
        return self.base(self.chunk_name) | {"choices": [], "usage": self.usage()}

    def extra_chunk(self, extra: dict) -> dict:
        """Fields of fmstack's own (RAG's `sources`) as a last chunk with no choices."""
        return self.base(self.chunk_name) | {"choices": []} | extra

    def first_chunks(self) -> list[dict]:
        return []

    def whole(self, deltas: list[Delta]) -> dict:
        by_index: dict[int, list[Delta]] = defaultdict(list)
        for delta in deltas:
            by_index[delta.index].append(delta)
        choices = [self.choice(i, by_index[i]) for i in self.indexes]
        return self.base(self.object_name) | {"choices": choices, "usage": self.usage()}

    def choice(self, index: int, deltas: list[Delta]) -> dict:
        raise NotImplementedError

    def chunk(self, delta: Delta) -> dict | None:
        """The chunk for `delta`, or None when there is nothing to send yet."""
        raise NotImplementedError

    def last_chunks(self) -> list[dict]:
        raise NotImplementedError


class ChatShape(Shape):
    object_name = "chat.completion"
    chunk_name = "chat.completion.chunk"

    def _logprobs(self, deltas: list[Delta]) -> dict | None:
        if not self.body.logprobs:
            return None
        return {
            "content": [
                {
                    "token": tok.token,
                    "logprob": tok.logprob,
                    "bytes": tok.bytes,
                    "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in top],
                }
                for d in deltas
                for tok, top in d.logprobs
            ]
        }

    def choice(self, index: int, deltas: list[Delta]) -> dict:
        text = "".join(d.text for d in deltas)
        content, calls = tools.parse(text) if self.body.with_tools else (text, [])
        message = {"role": "assistant", "content": (content or None) if calls else content}
        if calls:
            message["tool_calls"] = calls
        return {
            "index": index,
            "message": message,
            "logprobs": self._logprobs(deltas),
            "finish_reason": self._finish(index, calls),
        }

    def _finish(self, index: int, calls: list) -> str | None:
        """The finish reason: "tool_calls" when the answer is calls, unless it was cut at max_tokens: then "length",
        as OpenAI says, so an agent knows a call may be missing or incomplete."""
        reason = self.call.reason(index)
        return "tool_calls" if calls and reason != "length" else reason

    def _chunk(self, index: int, delta: dict, logprobs: dict | None = None, reason: str | None = None) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        return self.base(self.chunk_name) | {"choices": [choice]}

    def first_chunks(self) -> list[dict]:
        if self.body.with_tools:
            self._streams = {i: tools.ToolStream() for i in self.indexes}
        return [self._chunk(i, {"role": "assistant", "content": ""}) for i in self.indexes]

    def chunk(self, delta: Delta) -> dict | None:
        text = self._streams[delta.index].push(delta.text) if self.body.with_tools else delta.text
        if not text and self.body.with_tools:
            return None  # held back: it may be the start of a tool call
        return self._chunk(delta.index, {"content": text}, self._logprobs([delta]))

    def last_chunks(self) -> list[dict]:
        chunks = []
        for i in self.indexes:
            rest, calls = self._streams[i].finish() if self.body.with_tools else ("", [])
            if rest:
                chunks.append(self._chunk(i, {"content": rest}))
            if calls:
                deltas = [{"index": n} | call for n, call in enumerate(calls)]
                chunks.append(self._chunk(i, {"tool_calls": deltas}))
            chunks.append(self._chunk(i, {}, reason=self._finish(i, calls)))
        return chunks


class CompletionShape(Shape):
    """A text completion. With `echo` the choice's text starts with the prompt; with `echo` and `logprobs` the
    log-probabilities start with the prompt's tokens (the first has none: `null`, as OpenAI and vLLM send it),
    which is how eval harnesses score a multiple-choice answer (`max_tokens` 0 or 1)."""

    object_name = "text_completion"
    chunk_name = "text_completion"

    @property
    def echoed(self) -> str:
        return self.body.text if self.body.echo else ""

    def _logprobs(self, deltas: list[Delta], offset: int = 0) -> dict | None:
        if self.body.logprobs is None:
            return None
        tokens, logprobs, tops, offsets = [], [], [], []
        for d in deltas:
            if d.prompt:
                offset = 0  # the prompt's tokens come first, from the start of the echoed text
            for tok, top in d.logprobs:
                tokens.append(tok.token)
                logprobs.append(tok.logprob)
                tops.append(None if tok.logprob is None else {t.token: t.logprob for t in top})
                offsets.append(offset)
                offset += len(tok.token)
            if d.prompt:
                offset = len(self.echoed)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}

    def _choice(self, index: int, text: str, logprobs: dict | None, reason: str | None) -> dict:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}

    def choice(self, index: int, deltas: list[Delta]) -> dict:
        prompt = [d for d in deltas if d.prompt]
        answer = [d for d in deltas if not d.prompt]
        text = self.echoed + "".join(d.text for d in answer)
        return self._choice(index, text, self._logprobs(prompt + answer, len(self.echoed)), self.call.reason(index))

    def first_chunks(self) -> list[dict]:
        """The echoed prompt, when it comes without log-probabilities (with them, the engine's prompt event
        carries it)."""
        if not self.body.echo or self.body.logprobs is not None:
            return []
        echoed = [self._choice(i, self.echoed, None, None) for i in self.indexes]
        return [self.base(self.chunk_name) | {"choices": [choice]} for choice in echoed]

    def chunk(self, delta: Delta) -> dict:
        if delta.prompt:
            choice = self._choice(delta.index, self.echoed, self._logprobs([delta]), None)
        else:
            offset = len(self.echoed) + len(self.call.text_of(delta.index)) - len(delta.text)
            choice = self._choice(delta.index, delta.text, self._logprobs([delta], offset), None)
        return self.base(self.chunk_name) | {"choices": [choice]}

    def last_chunks(self) -> list[dict]:
        return [
            self.base(self.chunk_name) | {"choices": [self._choice(i, "", None, self.call.reason(i))]}
            for i in self.indexes
        ]
