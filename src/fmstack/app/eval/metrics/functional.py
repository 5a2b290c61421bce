"""Functional correctness of generated Python: run the case's unit tests against the answer (see `sandbox`)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from fmstack.app.eval.metrics.base import Case, Metric, MetricContext, Output, Score, register
from fmstack.app.eval.sandbox import SandboxResult, run_python

NO_TESTS = "case has no tests"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"):
    the probability that at least one of k samples drawn from n, of which c are correct, passes.

    1 - C(n-c, k) / C(n, k), with exact integer binomials (no float overflow for large n).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _details(result: SandboxResult) -> dict[str, Any]:
    return {"duration_s": result.duration_s, "stdout": result.stdout[-2000:], "stderr": result.stderr[-2000:]}


class _SandboxMetric(Metric):
    requires = frozenset({"tests"})
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    memory_mb: int = Field(default=512, ge=64)

    def run(self, code: str, tests: str) -> SandboxResult:
        return run_python(code, tests, timeout_s=self.timeout_s, memory_mb=self.memory_mb)


@register("functional")
class Functional(_SandboxMetric):
    """1.0 when the answer's code passes the case's tests, else 0.0 with the failing test or error as reason."""

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        if not case.tests:
            return Score(None, error=NO_TESTS)
        result = self.run(output.text, case.tests)
        value = 1.0 if result.passed else 0.0
        return Score(value, passed=self.judge_pass(value), reason=result.error, details=_details(result))


@register("pass_at_k")
class PassAtK(_SandboxMetric):
    """pass@k over the case's samples: each sample runs against the tests, then the unbiased estimator is applied.

    Generating n > k samples (set `n`) gives a lower-variance estimate of pass@k than generating exactly k.
    """

    k: int = Field(default=1, ge=1)
    n: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _n_at_least_k(self) -> PassAtK:
        if self.n is not None and self.n < self.k:
            raise ValueError(f"n ({self.n}) must be at least k ({self.k})")
        return self

    @property
    def samples(self) -> int:
        return self.n or self.k

    def default_label(self) -> str:
        return f"pass@{self.k}"

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        if not case.tests:
            return Score(None, error=NO_TESTS)
        samples = output.samples or [output.text]
        if len(samples) < self.k:
            return Score(None, error=f"pass@{self.k} needs at least {self.k} samples, got {len(samples)}")
        results = [self.run(sample, case.tests) for sample in samples]
        correct = sum(r.passed for r in results)
        value = pass_at_k(len(samples), correct, self.k)
        failures = [f"sample {i}: {r.error}" for i, r in enumerate(results) if not r.passed]
        reason = f"{correct}/{len(samples)} samples passed" + (f"; {failures[0]}" if failures else "")
        details = {"correct": correct, "n": len(samples), "errors": [r.error for r in results]}
        return Score(value, passed=self.judge_pass(value), reason=reason, details=details)
