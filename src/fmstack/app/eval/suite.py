"""Suites: a YAML file of cases, metrics and thresholds. A malformed suite is rejected with file, line and field.

```yaml
name: capitals
prompt: "What is the capital of {{ country }}? Answer with the city only."   # optional Jinja2 template
system: "You are a geography teacher."                                      # optional
params: {temperature: 0, max_tokens: 32}
metrics: [{name: contains, threshold: 1}, token_f1]
judge: {model: qwen2.5-0.5b-instruct}                                        # for AI-as-judge metrics
cases:
  - {vars: {country: France}, reference: Paris}
  - {input: "What is 2+2?", reference: "4", metrics: [{name: numeric, threshold: 1}]}
include:
  - {file: more_cases.jsonl}                                                # JSONL, CSV or Parquet
  - {traces: {app: shop-bot, feedback: negative, limit: 50}}                # stored production traces
  - {traces: {prompt: capitals@production}}          # calls through a stored prompt, with their variables
```
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fmstack.app.eval.metrics import Case, Metric, get_metric
from fmstack.core.errors import FmstackError
from fmstack.core.yamlfile import dotted, line_of, read_yaml, validate


class SuiteError(FmstackError):
    """A suite the user must fix; the message names the file, the line and the field."""


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class TraceFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    app: str | None = None
    model: str | None = None
    prompt: str | None = None  # calls through a stored prompt: `name` (any version), `name@3`, `name@production`
    since: datetime | None = None
    feedback: str = Field("any", pattern="^(any|positive|negative|corrected)$")
    limit: int = Field(100, ge=1)


class Include(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str | None = None
    traces: TraceFilter | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.file is None) == (self.traces is None):
            raise ValueError("give exactly one of 'file' or 'traces'")
        return self


class CaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    input: str | None = None
    messages: list[dict[str, Any]] | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    reference: str | list[str] | float | int | None = None
    context: list[str] | None = None
    tests: str | None = None
    metrics: list[str | MetricSpec] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    prompt: str | None = None
    system: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list)
    metrics: list[str | MetricSpec] = Field(default_factory=list)
    min_pass_rate: float = Field(1.0, ge=0, le=1, description="share of cases that must pass each threshold")
    judge: dict[str, Any] = Field(default_factory=dict)
    cases: list[CaseSpec] = Field(default_factory=list)
    include: list[Include] = Field(default_factory=list)


class Suite:
    """A validated suite: its cases (rendered to messages) and the metrics that apply to each."""

    def __init__(self, spec: SuiteSpec, path: Path | None, cases: list[tuple[Case, list[Metric]]]):
        self.spec = spec
        self.path = path
        self.cases = cases

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metrics(self) -> list[Metric]:
        """Every distinct metric of the suite (suite-wide and per case), in first-seen order."""
        seen: dict[str, Metric] = {}
        for _, metrics in self.cases:
            for m in metrics:
                seen.setdefault(metric_label(m), m)
        return list(seen.values())


def metric_label(metric: Metric) -> str:
    """A metric's column name: its `label`, or its name plus its threshold when one is set."""
    if metric.label:
        return metric.label
    name = metric.default_label()
    return name if metric.threshold is None else f"{name}≥{metric.threshold:g}"


def load_suite(path: Path, sessions=None, stored_prompts: bool = False) -> Suite:
    """Parse, validate and expand a suite file (and what it includes). With `stored_prompts`, stored prompt versions
    render each case's `vars` at run time (`eval run --prompt`): the suite's own `prompt` is not rendered, and a
    case may have only `vars`."""
    data, root = read_yaml(path, "suite", SuiteError)
    if not isinstance(data, dict):
        raise SuiteError(f"{path}:1: a suite is a mapping with at least 'name' and 'cases'.")
    spec = validate(SuiteSpec, data, path, root, SuiteError)
    cases = [
        *_inline_cases(path, root, spec, stored_prompts),
        *_included_cases(path, root, spec, sessions, stored_prompts),
    ]
    if not cases:
        raise SuiteError(f"{path}: the suite has no cases; add some under 'cases' or 'include'.")
    ids = [c.id for c, _ in cases]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SuiteError(f"{path}: case id '{dup}' is used twice; case ids must be unique.")
    return Suite(spec, path, cases)


def _metrics(path: Path, root, loc: tuple, specs: list) -> list[Metric]:
    """Metrics of one list, refusing two that would share a column (their scores would overwrite each other)."""
    metrics, seen = [], {}
    for i, spec in enumerate(specs):
        metric = _metric(path, root, (*loc, i), spec)
        label = metric_label(metric)
        if label in seen:
            raise SuiteError(
                f"{path}:{line_of(root, (*loc, i))}: {dotted((*loc, i))}: a second '{label}' (first at "
                f"{dotted((*loc, seen[label]))}); give one of them its own `label:`."
            )
        seen[label] = i
        metrics.append(metric)
    return metrics


def _inline_cases(path: Path, root, spec: SuiteSpec, stored_prompts: bool) -> list[tuple[Case, list[Metric]]]:
    suite_metrics = _metrics(path, root, ("metrics",), spec.metrics)
    out = []
    for i, c in enumerate(spec.cases):
        loc = ("cases", i)
        extra = _metrics(path, root, (*loc, "metrics"), c.metrics)
        case = _case(path, root, loc, spec, c, c.id or f"case-{i + 1}", stored_prompts)
        out.append((case, _merge(suite_metrics, extra)))
    return out


def _merge(suite_metrics: list[Metric], case_metrics: list[Metric]) -> list[Metric]:
    """Per-case metrics add to the suite's, replacing a suite metric of the same name (its threshold, say)."""
    names = {m.label or m.name for m in case_metrics}
    return [m for m in suite_metrics if (m.label or m.name) not in names] + case_metrics


def _metric(path: Path, root, loc: tuple, spec: str | MetricSpec) -> Metric:
    name, params = (spec, {}) if isinstance(spec, str) else (spec.name, spec.model_extra or {})
    try:
        return get_metric(name, params)
    except KeyError:
        from fmstack.app.eval.metrics import metric_names

        raise SuiteError(
            f"{path}:{line_of(root, loc)}: {dotted(loc)}: unknown metric '{name}'. "
            f"Known: {', '.join(metric_names())}; or name your own as 'module:Class'."
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise SuiteError(
            f"{path}:{line_of(root, (*loc, field))}: {dotted(loc)}.{field}: {first['msg']} (metric '{name}')."
        ) from None


def _case(path: Path, root, loc: tuple, spec: SuiteSpec, c: CaseSpec, case_id: str, stored_prompts: bool) -> Case:
    given = [k for k in ("input", "messages") if getattr(c, k) is not None]
    if len(given) > 1:
        raise SuiteError(f"{path}:{line_of(root, loc)}: {dotted(loc)}: give 'input' or 'messages', not both.")
    if c.messages is not None:
        messages = list(c.messages)
    elif c.input is None and stored_prompts:  # rendered from `vars` by each stored prompt version at run time
        return Case(case_id, None, c.vars, _reference(c), c.context, c.tests, c.metadata)
    else:
        if c.input is None and spec.prompt is None:
            raise SuiteError(
                f"{path}:{line_of(root, loc)}: {dotted(loc)}: the case has no 'input' or 'messages', and the suite "
                "has no 'prompt' template to render its 'vars' with."
            )
        user = c.input if c.input is not None else _render(path, root, loc, spec.prompt, c.vars)
        messages = [{"role": "user", "content": user}]
    if spec.system and not any(m.get("role") == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": spec.system})
    return Case(case_id, messages, c.vars, _reference(c), c.context, c.tests, c.metadata)


def _reference(c: CaseSpec) -> str | list[str] | None:
    return str(c.reference) if isinstance(c.reference, int | float) else c.reference


_JINJA = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)


def _render(path: Path, root, loc: tuple, template: str, variables: dict) -> str:
    try:
        return _JINJA.from_string(template).render(**variables)
    except jinja2.UndefinedError as exc:
        raise SuiteError(f"{path}:{line_of(root, loc)}: {dotted(loc)}.vars: {exc} (used by the prompt).") from None
    except jinja2.TemplateError as exc:
        raise SuiteError(f"{path}:{line_of(root, ('prompt',))}: prompt: {exc}.") from None


def _included_cases(
    path: Path, root, spec: SuiteSpec, sessions, stored_prompts: bool
) -> list[tuple[Case, list[Metric]]]:
    from fmstack.app.eval import sources

    suite_metrics = _metrics(path, root, ("metrics",), spec.metrics)
    out = []
    for i, inc in enumerate(spec.include):
        loc = ("include", i)
        if inc.file is not None:
            rows = sources.read_case_file(path.parent / inc.file, lambda msg: SuiteError(msg))
        else:
            rows = sources.cases_from_traces(inc.traces, sessions)
        for j, (where, row) in enumerate(rows):
            try:
                c = CaseSpec.model_validate(row)
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                raise SuiteError(f"{where}: {field}: {first['msg']}.") from None
            case_id = c.id or f"{Path(inc.file or 'traces').stem}-{j + 1}"
            case = _case(path, root, loc, spec, c, case_id, stored_prompts)
            try:
                extra = _metrics(path, root, (*loc, "metrics"), c.metrics)
            except SuiteError as exc:  # located in the included file, not the suite
                raise SuiteError(f"{where}: {exc.message.split(': ', 2)[-1]}") from None
            out.append((case, _merge(suite_metrics, extra)))
    return out
