"""Human review of an app's answers, one stage at a time (crawl, walk, run), and the queue reviewers work from.

- `policy`: per app (the `X-Fmstack-App` header), its stage and settings, in the store; `stages` moves it on when
  its numbers meet the bars (every move recorded) and reports them;
- `queue`: review items (a held crawl answer, a walk sample, a thumbs-down, an answer the judge scored low), the
  next item for a reviewer, decisions (approve, edit, reject, skip), waiting for a held answer's decision;
- `sampling`: which answers are sampled (a hash of the trace id: deterministic, the share holds);
- `judge`: the generic AI judge (the eval harness's judge metrics) and a judge trained on the reviews, and their
  agreement with the reviewers; `stats`: approval rate, edit distance, Cohen's kappa, volume, human time;
- `service`: the policies at work in a server (held answers, the sample and the judge after delivery);
- `suite`: an eval suite of the answers people accepted.

Transport-free: the server holds requests and serves the page, the CLI prints; both call these functions.

Layer: part of `fmstack.app`; imports `fmstack.app.eval` (judges, kappa, suites), `fmstack.gateway` and
`fmstack.core`.
"""

from fmstack.app.review.policy import STAGES, Policy, PolicySettings
from fmstack.app.review.queue import AlreadyReviewed, Verdict
from fmstack.app.review.service import Reviews
from fmstack.app.review.stages import PolicyReport, move, policy_report

__all__ = [
    "STAGES",
    "AlreadyReviewed",
    "Policy",
    "PolicyReport",
    "PolicySettings",
    "Reviews",
    "Verdict",
    "move",
    "policy_report",
]
