"""A small simulated app for `fmstack loop run`: the shop assistant of "Lumen Lamps", answered by SmolLM2.

Scripted users ask about the shop (opening hours, returns, shipping, ...), each question in several wordings. The
answers come from the model through fmstack's gateway, traced under the app's name like any production request.
Each user knows the truth: an answer that states the fact gets a thumbs up, one that does not gets a thumbs down,
and half of those unhappy users type the right answer (a correction). The app's review policy is `walk`: a share
of the answers, and every thumbs-down, goes to the review queue, where a scripted reviewer approves the right
answers and edits the wrong ones into the shop's answer. Everything lands in the store that `fmstack loop run`
reads; nothing here is special to the simulation.

    python examples/loop/simulate.py --app shop-bot --rounds 1
    fmstack loop run shop-bot --base smollm2-135m-instruct --config examples/loop/loop.yaml

Run it again later (or with another --seed) for the next loop's traffic.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

from fmstack.app.review.policy import find_policy, save_policy, settings_from
from fmstack.app.review.queue import decide, enqueue
from fmstack.app.review.sampling import sampled
from fmstack.core.config import get_settings
from fmstack.core.store.traces import add_feedback
from fmstack.gateway import CallContext, Gateway, generation_request

SYSTEM = "You are the assistant of Lumen Lamps, a small lamp shop. Answer in one short sentence."


@dataclass(frozen=True)
class Topic:
    answer: str  # what the shop wants its assistant to say
    must: tuple[str, ...]  # words an answer needs to count as right (lower case)
    questions: tuple[str, ...]  # the same question, worded as different users ask it


TOPICS = (
    Topic("We are open Monday to Saturday, from 9 am to 6 pm.", ("9", "6"), (
        "When are you open?", "What are your opening hours?", "What time does the shop close?",
        "Are you open on Saturdays?")),
    Topic("You can return any lamp within 30 days with the receipt.", ("30 days",), (
        "Can I return a lamp?", "What is your return policy?", "How long do I have to send a lamp back?",
        "I changed my mind about a lamp, can I bring it back?")),
    Topic("Shipping is free on orders over 50 euros and takes 2 to 4 days.", ("50", "free"), (
        "How much is shipping?", "Do you ship for free?", "How long does delivery take?",
        "What does delivery cost?")),
    Topic("Every lamp comes with a 2-year warranty.", ("2-year", "warranty"), (
        "Is there a warranty on your lamps?", "How long is the guarantee?", "What if my lamp breaks?",
        "Do your lamps have a warranty?")),
    Topic("All our lamps take standard E27 LED bulbs.", ("e27",), (
        "Which bulbs do your lamps use?", "What kind of bulb do I need?", "Do your lamps take LED bulbs?",
        "What socket do the lamps have?")),
    Topic("We accept cards, PayPal and bank transfer.", ("paypal",), (
        "How can I pay?", "Do you take PayPal?", "Which payment methods do you accept?",
        "Can I pay by card?")),
)  # fmt: skip


def right(topic: Topic, answer: str) -> bool:
    return all(word in answer.lower() for word in topic.must)


def ask_everything(gateway: Gateway, app: str, model: str, rounds: int, rng: random.Random, max_tokens: int):
    """Every question, `rounds` times, each by a random user: (trace id, topic, answer) per request."""
    asked = []
    questions = [(topic, q) for topic in TOPICS for q in topic.questions]
    for _ in range(rounds):
        rng.shuffle(questions)
        for topic, question in questions:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
            request = generation_request(
                messages, {"max_tokens": max_tokens, "temperature": 0.7, "seed": rng.randrange(1 << 30)}
            )
            context = CallContext(app=app, user=f"user-{rng.randrange(40)}")
            answer = gateway.complete_sync(model, request, context)
            asked.append((answer.trace_id, topic, answer.text))
    return asked


def judge_and_review(gateway: Gateway, app: str, asked: list, rng: random.Random) -> dict[str, int]:
    """The users' thumbs and corrections, then the scripted reviewer's decisions on what the policy queues."""
    counts = {"requests": len(asked), "right": 0, "thumbs_up": 0, "thumbs_down": 0, "corrections": 0,
              "approved": 0, "edited": 0}  # fmt: skip
    with gateway.sessions.begin() as session:
        policy = find_policy(session, app) or save_policy(
            session, gateway.registry, app, settings_from({"share": 0.5}), "walk"
        )
        for trace_id, topic, answer in asked:
            good = right(topic, answer)
            counts["right"] += good
            correction = topic.answer if not good and rng.random() < 0.5 else None
            add_feedback(session, trace_id, 1 if good else -1, correction, None)
            counts["thumbs_up" if good else "thumbs_down"] += 1
            counts["corrections"] += correction is not None
            if not good or sampled(trace_id, policy.share):
                item = enqueue(session, policy, trace_id, answer, "thumbs-down" if not good else "sampled")
                if item is not None:
                    action = "approve" if good else "edit"
                    decide(session, item.id, action, "reviewer-1", text=topic.answer, seconds=rng.uniform(5, 40))
                    counts["approved" if good else "edited"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="shop-bot", help="The app's name (X-Fmstack-App).")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="The model that answers.")
    parser.add_argument("--rounds", type=int, default=1, help="Times every question is asked (24 per round).")
    parser.add_argument("--max-tokens", type=int, default=48, help="Longest answer.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    gateway = Gateway.open(get_settings())
    try:
        asked = ask_everything(gateway, args.app, args.model, args.rounds, rng, args.max_tokens)
        counts = judge_and_review(gateway, args.app, asked, rng)
    finally:
        gateway.close()
    print(", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
