"""The review policies at work in a serving process: each app's policy (cached briefly), crawl answers held in the
store until a person decides, and after delivery the walk sample and the run judge, off the request's path.

The judge runs in one background worker, one answer at a time: its generations share the model's queue with the
users' requests, and a burst of answers must not become a burst of judge calls that fills it. Answers delivered
but not yet judged when the server stops are not judged (their traces are kept; nothing waits on them).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import IntegrityError

from fmstack.app.review.judge import Answered, Classify, classifier_verdict, llm_verdict
from fmstack.app.review.policy import Policy, list_policies
from fmstack.app.review.queue import Verdict, enqueue, record_verdict
from fmstack.app.review.sampling import sampled
from fmstack.core.store.schema import TraceScore
from fmstack.gateway import Gateway

JUDGE_METRIC = "review_judge"  # the trace score every review judgement is stored under (0-1)
BACKLOG = 1000  # answers waiting for the judge; past it, the newest are not judged (counted in `dropped`)


class Reviews:
    """One per server process."""

    def __init__(
        self, gateway: Gateway, load_classifier: Callable[[str], Classify] | None = None, ttl: float = 1.0
    ) -> None:
        self.gateway = gateway
        self.sessions = gateway.sessions
        self.ttl = ttl  # a policy changed by another process (the CLI) applies within this many seconds
        self._load_classifier = load_classifier
        self._classifiers: dict[str, Classify] = {}
        self._policies: dict[str, Policy] = {}
        self._loaded_at = -math.inf
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]]] | None = None
        self._worker: asyncio.Task | None = None  # held here: the loop keeps only a weak reference to a task
        self._tasks: set[asyncio.Task] = set()
        self.dropped = 0

    async def policy(self, app: str | None) -> Policy | None:
        """The app's policy, or None when it has none (no review)."""
        if not app:
            return None
        if time.monotonic() - self._loaded_at > self.ttl:
            self._policies = await asyncio.to_thread(self._read_policies)
            self._loaded_at = time.monotonic()
        return self._policies.get(app)

    def changed(self) -> None:
        """A policy changed through this process: the next request reads it again."""
        self._loaded_at = -math.inf

    def _read_policies(self) -> dict[str, Policy]:
        with self.sessions() as session:
            return {p.app: p for p in list_policies(session)}

    async def hold(self, policy: Policy, answered: Answered) -> None:
        """Store a crawl answer as a pending review before anyone sees it (a restart loses none)."""
        await asyncio.to_thread(self._enqueue, policy, answered, "crawl")
        if policy.judge:
            self._judge_later(self._judge_item, policy, answered)

    def delivered(self, policy: Policy, answered: Answered) -> None:
        """After an answer reached its user: walk queues its sample now; run has the judge score it first."""
        if policy.stage == "run" and policy.judge:
            self._judge_later(self._judge_run, policy, answered)
        else:
            self._spawn(self._sample(policy, answered))

    async def _sample(self, policy: Policy, answered: Answered) -> None:
        if not sampled(answered.trace_id, policy.share):
            return
        if await asyncio.to_thread(self._enqueue, policy, answered, "sampled") and policy.judge:
            self._judge_later(self._judge_item, policy, answered)  # the judge's view, to measure its agreement

    async def _judge_item(self, policy: Policy, answered: Answered) -> None:
        verdict = await self.verdict(policy, answered)
        await asyncio.to_thread(self._store_verdict, policy, answered, verdict)

    async def _judge_run(self, policy: Policy, answered: Answered) -> None:
        """Judge a share of the answers; those under the threshold, or that the judge could not score, go to a
        person, and so does a `share` of the rest (an audit of the judge)."""
        if not sampled(answered.trace_id, policy.judge_share, "judge"):
            await self._sample(policy, answered)
            return
        verdict = await self.verdict(policy, answered)
        if verdict.score is None:
            reason = "judge-error"
        elif verdict.score < policy.threshold:
            reason = "judge-low"
        else:
            reason = "sampled" if sampled(answered.trace_id, policy.share) else None
        await asyncio.to_thread(self._store_verdict, policy, answered, verdict, reason)

    async def verdict(self, policy: Policy, answered: Answered) -> Verdict:
        """The policy's judge on one answer: the trained one when set, else the generic one."""
        if policy.judge_classifier and self._load_classifier is not None:
            path = policy.judge_classifier
            if path not in self._classifiers:
                self._classifiers[path] = await asyncio.to_thread(self._load_classifier, path)
            return await asyncio.to_thread(classifier_verdict, self._classifiers[path], policy.judge, answered)
        return await llm_verdict(self.gateway, policy, answered)

    def _enqueue(self, policy: Policy, answered: Answered, reason: str) -> bool:
        """Queue an answer (False if it already is: a thumbs-down and a sample race for the same answer)."""
        self.gateway.writer.flush()  # the trace row first: the item refers to it
        try:
            with self.sessions.begin() as session:
                return enqueue(session, policy, answered.trace_id, answered.answer, reason) is not None
        except IntegrityError:
            return False

    def _store_verdict(self, policy: Policy, answered: Answered, verdict: Verdict, reason: str | None = None) -> None:
        """The judge's score on the trace (for the dashboard and /metrics), and on its review if it has or gets one."""
        if reason is not None:
            self._enqueue(policy, answered, reason)
        with self.sessions.begin() as session:
            passed = None if verdict.score is None else verdict.score >= policy.threshold
            session.add(
                TraceScore(
                    trace_id=answered.trace_id,
                    metric=JUDGE_METRIC,
                    value=verdict.score,
                    passed=passed,
                    reason=verdict.reason,
                    error=verdict.error,
                    judge=verdict.judge,
                )
            )
            record_verdict(session, answered.trace_id, verdict)

    def _judge_later(self, job: Callable[[Policy, Answered], Awaitable[None]], policy: Policy, answered: Answered):
        if self._jobs is None:
            self._jobs = asyncio.Queue(BACKLOG)
            self._worker = asyncio.ensure_future(self._work(self._jobs))
        try:
            self._jobs.put_nowait(lambda: job(policy, answered))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _work(self, jobs: asyncio.Queue) -> None:
        while True:
            job = await jobs.get()
            try:
                await job()
            except Exception as exc:  # noqa: BLE001 - one answer's failure must not stop the judging of the others
                print(f"fmstack: review judge failed: {type(exc).__name__}: {exc}")
            finally:
                jobs.task_done()

    async def idle(self) -> None:
        """Wait until every sampled answer is queued and every queued judgement is done (for scripts and tests
        that read the queue right after sending answers)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._jobs is not None:
            await self._jobs.join()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
