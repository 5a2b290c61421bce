"""Turning a stream of token bytes into text events: UTF-8 safe, and never leaking a stop string.

Shared by the local engines, which decode token by token themselves so they can cancel between tokens and
report per-token log-probabilities.
"""

from __future__ import annotations

import codecs

from fmstack.engines.base import Delta, TopLogprob

LogprobEntry = tuple[TopLogprob, list[TopLogprob]]


class TextAssembler:
    """Accumulates token bytes; emits text once it is valid UTF-8 and cannot be the start of a stop string."""

    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._pending_logprobs: list[LogprobEntry] = []
        self._pending_tokens = 0
        self.stopped = False

    def push(self, data: bytes, logprob: LogprobEntry | None = None) -> Delta | None:
        """Add one token's bytes; return what can be shown now, or None. Sets `stopped` on a stop string."""
        self._pending += self._decoder.decode(data)
        self._pending_tokens += 1
        if logprob is not None:
            self._pending_logprobs.append(logprob)
        found = [at for s in self.stop if (at := self._pending.find(s)) >= 0]
        if found:
            self.stopped = True
            at = min(found)  # the earliest stop string in the text, whatever its place in the list
            return self._take(at) if at else None
        keep = max((_overlap(self._pending, s) for s in self.stop), default=0)
        return self._take(len(self._pending) - keep) if len(self._pending) > keep else None

    def flush(self) -> Delta | None:
        """At the end of generation, release what was held back (it was not a stop string after all)."""
        if self.stopped:
            return None
        self._pending += self._decoder.decode(b"", final=True)
        return self._take(len(self._pending)) if self._pending or self._pending_tokens else None

    def _take(self, n: int) -> Delta:
        delta = Delta(self._pending[:n], self._pending_logprobs, self._pending_tokens)
        self._pending, self._pending_logprobs, self._pending_tokens = self._pending[n:], [], 0
        return delta


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for k in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
