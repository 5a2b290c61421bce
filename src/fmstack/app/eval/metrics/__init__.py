"""The metric registry. Importing this package registers every built-in metric."""

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
