"""Metrics: what a metric sees and returns (`base`), the registry, and the built-in metrics, one module per kind:
`deterministic` (exact match, regexes, JSON, numbers), `lexical` (token F1, ROUGE-L, BLEU, chrF), `semantic`
(embedding similarity), `functional` (unit tests in the sandbox, pass@k), `judge` (AI as a judge) and `rag`
(faithfulness, relevance, context recall).

Importing this package registers every built-in metric: each module registers its classes with `@register` when
it is imported, and this package imports them after `base`, so the registry never needs to know them. A user's
own metric registers the same way, or is named `module:Class` in a suite.

```python
from fmstack.app.eval.metrics import Case, MetricContext, Output, get_metric, metric_names

print(metric_names())                                   # every registered metric
metric = get_metric("contains", {"value": "Paris"})
metric.score(Case(id="1"), Output(text="Paris, France"), MetricContext()).value    # 1.0
```

Layer: imports `fmstack.app.eval.sandbox` (for `functional`) and the libraries that compute scores; models reach a
metric only through `MetricContext` (an embedding function, a judge function), so nothing here loads one.
"""

# The built-in metrics register themselves when imported.
from fmstack.app.eval.metrics import deterministic, functional, judge, lexical, rag, semantic  # noqa: F401
from fmstack.app.eval.metrics.base import (
    Case,
    Metric,
    MetricContext,
    Output,
    Score,
    get_metric,
    metric_classes,
    metric_names,
    register,
)

__all__ = [
    "Case",
    "Metric",
    "MetricContext",
    "Output",
    "Score",
    "get_metric",
    "metric_classes",
    "metric_names",
    "register",
]
