"""Query expansion by a hypothetical answer (HyDE, Gao et al. 2022; LlamaIndex's HyDEQueryTransform).

People ask in their own words ("how do I put a number into an ordered list without re-sorting it?"); documents
use theirs ("insort", "bisection"). With `expand="hyde"` the chat model first writes a short passage answering the
question as documentation would, and retrieval searches for the question and that passage together: bm25 matches
both texts, and the vector search looks for the normalised sum of their two embeddings. The passage may well be
wrong; it only has to sound like the documents. Rerankers still judge the question.

The hits' `similarity`, what the "I don't know" gate reads, becomes the passage's: on the stdlib corpus people's
own questions about its documents score as low as 0.23 against the right passage, below everyday off-topic
questions (0.33), so no threshold on the question separates them; the model's passage about the same question
scores 0.28 or more, while its passage about an off-topic question stays as far from the documents as the
question was. The gate's threshold is calibrated for each signal (`rag calibrate --expand hyde`); a collection
calibrated only without expansion uses that threshold for both.

Costs one generation (≤ 64 tokens) per search, traced as `rag.expand` of app fmstack-rag; what it buys on both
corpora is measured by benchmarks/rag.py (README's RAG table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fmstack.core.errors import InvalidRequest
from fmstack.gateway import CallContext, Gateway, generation_request

EXPANSIONS = ("none", "hyde")
APP = "fmstack-rag"
MAX_TOKENS = 64
HYDE_SYSTEM = (
    "You write a short passage of reference documentation that answers the user's question. "
    "Two or three sentences, no preamble."
)


@dataclass
class Expanded:
    """What the retrievers look for instead of the bare question (the passage itself is on the `rag.expand` trace)."""

    text: str  # keyword search: the question, then the passage
    vector: np.ndarray  # vector search: the normalised sum of the question's and the passage's embeddings
    passage: np.ndarray | None = None  # the passage's own embedding: what the "I don't know" gate compares


def check_expand(expand: str | None) -> str:
    expand = expand or "none"
    if expand not in EXPANSIONS:
        raise InvalidRequest(f"expand must be one of {', '.join(EXPANSIONS)}, not '{expand}'.", param="expand")
    return expand


def hyde_passage(gateway: Gateway, model: str, question: str) -> str:
    """The model's hypothetical answer to `question` (greedy, so a repeated question retrieves the same)."""
    messages = [{"role": "system", "content": HYDE_SYSTEM}, {"role": "user", "content": question}]
    request = generation_request(messages, {"max_tokens": MAX_TOKENS, "temperature": 0})
    answer = asyncio.run(gateway.complete(model, request, CallContext(APP), endpoint="rag.expand"))
    return answer.text.strip()


def expand_query(
    gateway: Gateway, model: str, question: str, question_vector: np.ndarray, embed: Callable[[list[str]], np.ndarray]
) -> Expanded:
    """The question with its hypothetical answer; a model that writes nothing leaves the question as it was."""
    passage = hyde_passage(gateway, model, question)
    if not passage:
        return Expanded(question, question_vector)
    passage_vector = embed([passage])[0]
    both = question_vector + passage_vector
    return Expanded(f"{question}\n{passage}", both / np.linalg.norm(both), passage_vector)
