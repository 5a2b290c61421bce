"""Schemathesis against /openapi.json: every route, valid and invalid bodies. No answer is a 5xx, and every error
is OpenAI's `{"error": {...}}` shape. The fast version is in `make test`; `FMSTACK_FUZZ_EXAMPLES=200` runs the
long one."""

import os

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("FMSTACK_FUZZ_EXAMPLES", "8"))
# generation lengths a fuzzer would pick at random: capped so each example costs a few tokens, not a whole context
SMALL = {"max_tokens": 4, "max_completion_tokens": 4, "max_output_tokens": 4, "n": 1}


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict):
        return body | {k: v for k, v in SMALL.items() if isinstance(body.get(k), int)}
    return body


@schemathesis.check
def openai_error_shape(ctx, response, case):
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        error = response.json().get("error")
        assert isinstance(error, dict) and isinstance(error.get("message"), str) and "type" in error, response.text


def fuzz(operation, mode: GenerationMode) -> None:
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        database=None,
    )
    def check(case):
        case.call_and_validate(checks=[not_a_server_error, openai_error_shape], timeout=120)

    check()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_route_answers_a_5xx_and_errors_are_openai_shaped(server, mode):
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            fuzz(operation, mode)
        except hypothesis.errors.Unsatisfiable:
            continue  # nothing invalid can be sent to it (a GET without parameters)
        except Exception as exc:  # collect every route's failure, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
