"""Which answers are sampled for review: a hash of the trace id, not a random draw, so the same answer is always
in or out (a retry of the enqueueing, a second server, a test all agree) and the share holds over many answers."""

from __future__ import annotations

import hashlib


def sampled(trace_id: str, share: float, salt: str = "review") -> bool:
    """True for about `share` of all trace ids; `salt` makes independent draws (review sample, second review)."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{trace_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
