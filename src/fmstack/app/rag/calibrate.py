"""Calibrated refusal: the "I don't know" threshold of one collection, chosen from the collection itself.

The answer path refuses when no retrieved chunk is at least `min_similarity` similar to the question. How similar
a right passage is depends on the embedding model and the corpus (MiniLM scores Wikipedia's right passages
0.53–0.78, a technical corpus's 0.43–0.74), so one global constant answers too little on one corpus and too much
on another. `calibrate` measures it instead:

- answerable: questions the local model writes from sampled chunks, kept when retrieval finds their document
  (`fmstack.app.rag.synthetic`), and the answerable questions of a hand-written set if one is given;
- unanswerable: `OFF_TOPIC`, everyday questions about nothing a document collection is likely to hold, and the
  unanswerable questions of the set;
- each question's best similarity over the top `TOP_K` hits (what the answer path compares);
- the threshold that maximizes balanced accuracy (answered answerable + "I don't know" to unanswerable, each as a
  share), a quarter of the way up the widest interval that does: nearer the unanswerable side, because people's
  own questions score lower than the model's (on the stdlib corpus hand-written answerable questions' best
  passages score 0.23-0.87, the synthetic ones' 0.42-0.87, while off-topic ones stay below 0.34 on both corpora).

The threshold and the curve are stored with the collection; `rag ask`, the RAG route and `rag eval` use it when a
request sets none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fmstack.app.rag.collections import get_collection
from fmstack.app.rag.evaluate import Question
from fmstack.app.rag.expand import check_expand
from fmstack.app.rag.synthetic import check_documents, synthetic_pairs
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import utcnow
from fmstack.gateway import Gateway

TOP_K = 5  # what `rag ask` gives the model
ANSWER_SIDE = 0.25  # where in the widest best interval the threshold sits: 0 at its unanswerable end
MIN_CHUNKS = 4
MIN_ANSWERABLE = 3
OFF_TOPIC = [
    "How long should banana bread bake in the oven?",
    "How do I reset my home Wi-Fi router to factory settings?",
    "What tire pressure should a mountain bike use?",
    "How many calories are in an avocado?",
    "Who won the football World Cup in 1998?",
    "How often should I feed a sourdough starter?",
    "What is a good stretching routine before running?",
    "How do I remove a red wine stain from a carpet?",
    "What is the best time of year to plant tulip bulbs?",
    "How do I change a flat tire on a car?",
    "Which vaccines does a puppy need in its first year?",
    "How much water should I drink every day?",
    "What are the rules of the card game bridge?",
    "How do I knit a scarf for beginners?",
    "Where can I watch the northern lights in winter?",
    "How do I brew pour-over coffee?",
    "What should I pack for a week-long camping trip?",
    "How do I train for a half marathon?",
    "What is the plot of the movie Titanic?",
    "How do I get rid of aphids on roses?",
    "What is the recommended dose of ibuprofen for adults?",
    "How do I negotiate a higher salary?",
    "Which houseplants are safe for cats?",
    "How do I make a paper airplane that flies far?",
    "What is the capital of Mongolia?",
    "How long does it take to boil an egg?",
    "Who painted the Mona Lisa?",
    "How do I descale an espresso machine?",
    "What is the best way to learn to juggle?",
    "How do I fix a squeaky door hinge?",
    "When is the best season to visit Japan?",
    "How do I write a wedding toast?",
]


@dataclass
class Calibration:
    """The chosen threshold, the counts it rests on, and the trade-off curve (threshold, answered, idk)."""

    collection: str
    threshold: float
    previous: float | None
    answered_when_answerable: float
    idk_when_unanswerable: float
    answerable: int
    unanswerable: int
    synthetic_written: int
    synthetic_kept: int
    model: str
    curve: list[tuple[float, float, float]]
    scores: dict[str, list[float]]
    expand: str = "none"  # the similarity calibrated: the question's, or with "hyde" the hypothetical answer's
    plot: str | None = None
    questions: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def choose_threshold(positive: list[float], negative: list[float]) -> float:
    """`ANSWER_SIDE` of the way up the widest interval of thresholds with the best balanced accuracy (answer when
    score ≥ t)."""
    cuts = sorted({*positive, *negative})
    candidates = [cuts[0] - 0.05] + [(a + b) / 2 for a, b in zip(cuts, cuts[1:], strict=False)] + [cuts[-1] + 0.05]
    pos, neg = np.array(positive), np.array(negative)

    def balanced(t: float) -> float:
        answered = float((pos >= t).mean()) if len(pos) else 1.0
        idk = float((neg < t).mean()) if len(neg) else 1.0
        return round(answered + idk, 9)

    values = [balanced(t) for t in candidates]
    best = max(values)
    runs: list[list[int]] = []  # runs of consecutive candidates at the best value
    for i, v in enumerate(values):
        if v == best:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    widest = max(runs, key=lambda r: (_width(cuts, r), -r[0]))
    low, high = _interval(cuts, widest)
    return round(low + (high - low) * ANSWER_SIDE, 4)


def _interval(cuts: list[float], run: list[int]) -> tuple[float, float]:
    """The scores bounding a run of candidates: candidate i lies between cuts[i-1] and cuts[i]."""
    low = cuts[run[0] - 1] if run[0] > 0 else cuts[0] - 0.1
    high = cuts[run[-1]] if run[-1] < len(cuts) else cuts[-1] + 0.1
    return low, high


def _width(cuts: list[float], run: list[int]) -> float:
    low, high = _interval(cuts, run)
    return high - low


def curve(positive: list[float], negative: list[float], step: float = 0.01) -> list[tuple[float, float, float]]:
    """(threshold, share of answerable answered, share of unanswerable refused) from 0 to 1."""
    pos, neg = np.array(positive), np.array(negative)
    points = []
    for t in np.arange(0.0, 1.0 + step / 2, step):
        answered = float((pos >= t).mean()) if len(pos) else 1.0
        idk = float((neg < t).mean()) if len(neg) else 1.0
        points.append((round(float(t), 3), round(answered, 4), round(idk, 4)))
    return points


def top_similarity(rag, collection: str, question: str, **search) -> float:
    hits = rag.search(collection, question, top_k=TOP_K, **search)
    return max((h.similarity for h in hits), default=0.0)


def calibrate(
    rag,
    gateway: Gateway,
    collection: str,
    model: str,
    samples: int = 40,
    questions: list[Question] | None = None,
    plot: Path | None = None,
    seed: int = 0,
    expand: str = "none",
    expand_model: str | None = None,
) -> Calibration:
    """Choose and store the collection's threshold (see the module's docstring) for the similarity that `expand`
    gives the hits (`fmstack.app.rag.expand`: with "hyde", the hypothetical answer's, written by `expand_model`)."""
    expand = check_expand(expand)
    if questions:
        check_documents(rag, collection, questions)
    pairs, written = synthetic_pairs(rag, gateway, collection, model, samples, MIN_CHUNKS, seed)
    asked = [(p.question, True, "synthetic") for p in pairs]
    asked += [(q, False, "off-topic") for q in OFF_TOPIC]
    asked += [(q.question, q.answerable, "question set") for q in questions or []]
    if sum(answerable for _, answerable, _ in asked) < MIN_ANSWERABLE:
        raise InvalidRequest(
            f"Only {len(pairs)} of {written} questions the model wrote about collection '{collection}' could be used "
            f"(at least {MIN_ANSWERABLE} answerable ones are needed): the collection is too small or the model too "
            "weak. Try a larger --samples, another --model, or give hand-written --questions.",
            param="collection",
        )
    search = {"expand": expand, "expand_model": expand_model}
    scored = [(q, answerable, origin, top_similarity(rag, collection, q, **search)) for q, answerable, origin in asked]
    positive = [s for _, answerable, _, s in scored if answerable]
    negative = [s for _, answerable, _, s in scored if not answerable]
    threshold = choose_threshold(positive, negative)
    result = Calibration(
        collection=collection,
        threshold=threshold,
        previous=rag.calibrated_threshold(collection, expand),
        expand=expand,
        answered_when_answerable=float(np.mean([s >= threshold for s in positive])),
        idk_when_unanswerable=float(np.mean([s < threshold for s in negative])),
        answerable=len(positive),
        unanswerable=len(negative),
        synthetic_written=written,
        synthetic_kept=len(pairs),
        model=model,
        curve=curve(positive, negative),
        scores={"answerable": sorted(positive), "unanswerable": sorted(negative)},
        questions=[{"question": q, "answerable": a, "origin": o, "similarity": s} for q, a, o, s in scored],
    )
    if plot is not None:
        result.plot = str(plot_curve(result, plot))
    store(rag, result)
    return result


def store(rag, result: Calibration) -> None:
    """Make `result.threshold` the collection's for its expansion, with how it was chosen: without expansion the
    collection's `min_similarity` (the calibration of "hyde" kept beside it), with "hyde" under that key."""
    with rag.sessions.begin() as s:
        col = get_collection(s, result.collection)
        details = {k: v for k, v in result.as_dict().items() if k != "questions"}
        details |= {"at": utcnow().isoformat(), "questions": result.questions}
        if result.expand == "hyde":
            col.calibration = (col.calibration or {}) | {"hyde": details}
            return
        col.min_similarity = result.threshold
        col.calibration = details | ({"hyde": col.calibration["hyde"]} if (col.calibration or {}).get("hyde") else {})


def plot_curve(result: Calibration, path: Path) -> Path:
    """The trade-off: share of answerable questions answered and of unanswerable refused, by threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, answered, idk = zip(*result.curve, strict=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(t, answered, label=f"answerable answered ({result.answerable})", color="#2f5bd3")
    ax.plot(t, idk, label=f'unanswerable: "I don\'t know" ({result.unanswerable})', color="#c0392b")
    ax.axvline(result.threshold, color="black", linestyle="--", label=f"chosen {result.threshold:.3f}")
    if result.previous is not None:
        ax.axvline(result.previous, color="grey", linestyle=":", label=f"previous {result.previous:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    to = "the hypothetical answer (expand hyde)" if result.expand == "hyde" else "the question"
    ax.set_xlabel(f"min_similarity (best chunk's cosine similarity to {to})")
    ax.set_ylabel("share of questions")
    ax.set_title(f"Calibrated refusal, collection '{result.collection}', expand {result.expand}")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
