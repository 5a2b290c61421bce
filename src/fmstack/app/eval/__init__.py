"""Evaluation of open-ended outputs: suites, metrics, judges, runs, reports (the application layer's `app/eval`)."""
