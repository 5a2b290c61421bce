"""`fmstack train judge`: a MiniLM classifier trained on an app's reviews, measured beside the generic judge on the
same held-out reviews, and used by the policy when it agrees better with the reviewers."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fmstack.app.review.judge import train_judge
from fmstack.app.review.policy import get_policy, save_policy, settings_from
from fmstack.app.review.queue import Verdict, decide, enqueue, record_verdict
from fmstack.cli import app
from fmstack.core.config import get_settings
from fmstack.core.registry import Registry
from fmstack.core.store.schema import JudgeCalibration, Trace
from fmstack.gateway import Gateway
from fmstack.model.train.classify import load_classifier, train_classifier
from fmstack.model.train.configs import ClassifyConfig

pytestmark = pytest.mark.slow
GOOD = "Your order ships within two working days; the tracking link comes by email."
BAD = "Sorry, I cannot help with that. Banana."


def reviewed(sessions, n: int) -> None:
    """n answers per kind: good ones approved, bad ones rejected; the generic judge passed them all (score 0.9),
    so it cannot tell them apart (kappa 0)."""
    with sessions.begin() as s:
        policy = save_policy(s, Registry(get_settings()), "shop", settings_from({}), "crawl")
        for i in range(2 * n):
            good = i % 2 == 0
            trace_id = f"t{i}"
            request = {"messages": [{"role": "user", "content": f"When does order {i} ship?"}]}
            s.add(
                Trace(
                    id=trace_id,
                    endpoint="chat.completions",
                    app="shop",
                    status="ok",
                    status_code=200,
                    request=request,
                    response_text=GOOD if good else BAD,
                )
            )
            s.flush()
            item = enqueue(s, policy, trace_id, GOOD if good else BAD, "crawl")
            record_verdict(s, trace_id, Verdict(0.9, "looks fine", "generic"))
            decide(s, item.id, "approve" if good else "reject", "alice", reason="unhelpful")


def test_a_judge_trained_on_reviews_replaces_a_generic_judge_that_agrees_worse(home, tmp_path):
    gateway = Gateway.open(get_settings())
    reviewed(gateway.sessions, 16)
    config = ClassifyConfig(epochs=4, batch_size=4, lr=1e-4, max_length=64)
    checkpoint = tmp_path / "judge"
    try:
        result = train_judge(
            gateway,
            "shop",
            checkpoint,
            train=lambda data, out: train_classifier(data, out, get_settings(), config),
            load=load_classifier,
        )
    finally:
        gateway.close()
    assert (result.train_examples, result.held_out) == (24, 8)  # 4 of each kind held out
    assert result.generic["kappa"] is None or result.generic["kappa"] <= 0
    assert result.trained["n"] == 8 and result.trained["kappa"] == pytest.approx(1.0)
    assert result.used == f"classifier:{checkpoint}"
    with gateway.sessions() as s:
        assert get_policy(s, "shop").judge == f"classifier:{checkpoint}"
        rows = s.query(JudgeCalibration).filter_by(metric="review:shop").all()
    assert {r.judge for r in rows} == {f"classifier:{checkpoint}", "stored judge scores"}


def test_train_judge_needs_reviews_of_both_kinds(home):
    gateway = Gateway.open(get_settings())
    reviewed(gateway.sessions, 2)
    gateway.close()
    result = CliRunner().invoke(app, ["train", "judge", "shop"])
    assert result.exit_code == 2 and "Too few reviews to train a judge: 2 approved and 2" in result.output
