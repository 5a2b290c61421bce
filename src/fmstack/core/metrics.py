"""Prometheus metrics: what an operator watches (latency, TTFT, TPOT, tokens, cost, queue, in flight, A/B splits,
human review).

Most are counted from each finished call's trace row (`Metrics.observe`). What changes without a call — scores
attached later, review decisions made in the terminal, the review queue — is read from the store at scrape time,
so every process on the store reports the same numbers and a restart resets nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from fmstack.core.store.review_counts import ReviewCounts

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    """One registry per server, so several servers in one process (tests) do not share counters."""

    def __init__(
        self,
        queue_depths: Callable[[], dict[str, int]],
        trace_scores: Callable[[], list[tuple[str, str, float | None, int]]] | None = None,
        review_counts: Callable[[], ReviewCounts] | None = None,
    ):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fmstack_requests", "Requests by model, endpoint and status", ["model", "endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "fmstack_request_latency_seconds", "End-to-end latency", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "fmstack_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "fmstack_time_per_output_token_seconds",
            "Time per output token after the first",
            ["model"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("fmstack_tokens", "Tokens in and out", ["model", "direction"], registry=r)
        self.cost = Counter("fmstack_cost_usd", "Cost in US dollars at the registry's prices", ["model"], registry=r)
        self.in_flight = Gauge("fmstack_requests_in_flight", "Requests being served", ["model"], registry=r)
        self.queue_depth = Gauge("fmstack_queue_depth", "Requests waiting for a model", ["model"], registry=r)
        # what the llama.cpp engine's optimisations saved: hit rate = prefix_cache_hits / requests
        self.prefix_cache_hits = Counter(
            "fmstack_prefix_cache_hits", "Requests that reused a cached prompt prefix", ["model"], registry=r
        )
        self.prefix_cache_tokens = Counter(
            "fmstack_prefix_cache_tokens",
            "Prompt tokens taken from the prefix cache, not prefilled",
            ["model"],
            registry=r,
        )
        self.draft_tokens = Counter(
            "fmstack_speculative_draft_tokens", "Tokens drafted by prompt lookup and verified", ["model"], registry=r
        )
        self.accepted_tokens = Counter(
            "fmstack_speculative_accepted_tokens",
            "Drafted tokens the model kept (acceptance = accepted / draft)",
            ["model"],
            registry=r,
        )
        self.ab_requests = Counter(
            "fmstack_ab_requests", "Requests to A/B routes", ["route", "variant", "status"], registry=r
        )
        self.ab_latency = Histogram(
            "fmstack_ab_request_latency_seconds",
            "End-to-end latency of A/B route requests",
            ["route", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._queue_depths = queue_depths
        if trace_scores is not None:
            self.registry.register(_TraceScores(trace_scores))
        if review_counts is not None:
            self.registry.register(_ReviewCounts(review_counts))

    def observe(self, row: dict) -> None:
        """Record a finished request from its trace row."""
        # a label per name a client sends would grow without bound: only registry models get their own
        model = row["model"] if row.get("engine") else "unknown"
        self.requests.labels(model, row["endpoint"], row["status"]).inc()
        self.tokens.labels(model, "in").inc(row["prompt_tokens"])  # work done counts even if cut short
        self.tokens.labels(model, "out").inc(row["completion_tokens"])
        self.cost.labels(model).inc(row["cost"])
        if row.get("cached_tokens"):
            self.prefix_cache_hits.labels(model).inc()
            self.prefix_cache_tokens.labels(model).inc(row["cached_tokens"])
        if row.get("draft_tokens"):
            self.draft_tokens.labels(model).inc(row["draft_tokens"])
            self.accepted_tokens.labels(model).inc(row.get("accepted_tokens") or 0)
        if row.get("route"):  # routes and their variants are the store's, so their labels stay few
            self._observe_ab(row)
        if row["status"] != "ok":
            return
        self.latency.labels(model).observe(row["latency_ms"] / 1000)
        if row.get("ttft_ms") is not None:
            self.ttft.labels(model).observe(row["ttft_ms"] / 1000)
            if row["completion_tokens"] > 1:
                tpot = (row["latency_ms"] - row["ttft_ms"]) / 1000 / (row["completion_tokens"] - 1)
                self.tpot.labels(model).observe(tpot)

    def _observe_ab(self, row: dict) -> None:
        route, variant = row["route"], row.get("variant") or "unknown"
        self.ab_requests.labels(route, variant, row["status"]).inc()
        if row["status"] == "ok":
            self.ab_latency.labels(route, variant).observe(row["latency_ms"] / 1000)

    def render(self) -> bytes:
        for model, depth in self._queue_depths().items():
            self.queue_depth.labels(model).set(depth)
        return generate_latest(self.registry)


class _TraceScores:
    """Scores attached to traces after the fact (by `fmstack eval score`, maybe in another process): read from the
    store at scrape time."""

    def __init__(self, summary: Callable[[], list[tuple[str, str, float | None, int]]]):
        self.summary = summary

    def collect(self):
        mean = GaugeMetricFamily("fmstack_trace_score_mean", "Mean score of scored traces", labels=["metric", "model"])
        count = CounterMetricFamily("fmstack_trace_scores", "Traces scored", labels=["metric", "model"])
        for metric, model, avg, n in self.summary():
            if avg is not None:
                mean.add_metric([metric, model], avg)
            count.add_metric([metric, model], n)
        yield mean
        yield count


class _ReviewCounts:
    """Human review, per app under a review policy: the queue, the decisions, the crawl answers held for a person,
    and the answers delivered with no person before delivery (share automated = automated / all, in PromQL over a
    rate, or `fmstack_review_automated_share` since the start)."""

    def __init__(self, counts: Callable[[], ReviewCounts]):
        self.counts = counts

    def collect(self):
        c = self.counts()
        stage = GaugeMetricFamily(
            "fmstack_review_stage", "The app's review stage (1 on its stage)", labels=["app", "stage"]
        )
        for app, name in c.stages.items():
            stage.add_metric([app, name], 1)
        depth = GaugeMetricFamily(
            "fmstack_review_queue_depth", "Review items waiting for a person", labels=["app", "reason"]
        )
        for (app, reason), n in sorted(c.pending.items()):
            depth.add_metric([app, reason], n)
        held = GaugeMetricFamily(
            "fmstack_review_held_answers", "Crawl answers held until a person decides (a client waits)", labels=["app"]
        )
        reviews = CounterMetricFamily(
            "fmstack_reviews", "Review decisions (approved, edited, rejected, skipped)", labels=["app", "decision"]
        )
        for (app, decision), n in sorted(c.decisions.items()):
            reviews.add_metric([app, decision], n)
        seconds = CounterMetricFamily(
            "fmstack_review_seconds", "Seconds reviewers spent on decided items", labels=["app"]
        )
        answers = CounterMetricFamily(
            "fmstack_review_answers",
            "Answered requests of apps under review: delivered with no person before delivery (automated), or held "
            "for one in crawl (human)",
            labels=["app", "delivery"],
        )
        share = GaugeMetricFamily(
            "fmstack_review_automated_share",
            "Share of answered requests delivered with no person before delivery",
            labels=["app"],
        )
        apps = sorted(set(c.stages) | {a for a, _ in c.pending} | {a for a, _ in c.decisions})
        for app in apps:
            held.add_metric([app], c.held.get(app, 0))
            seconds.add_metric([app], c.seconds.get(app, 0.0))
            answered = c.answered.get(app, 0)
            human = min(c.before_delivery.get(app, 0), answered)
            answers.add_metric([app, "automated"], answered - human)
            answers.add_metric([app, "human"], human)
            if answered:
                share.add_metric([app], (answered - human) / answered)
        yield from (stage, depth, held, reviews, seconds, answers, share)
