"""Evaluation of model outputs: a suite of cases run against models and prompts, scored by metrics, stored, reported
and compared, with the statistics to tell a real difference from noise.

`suite` (the YAML file) and `sources` (cases from JSONL, CSV, Parquet or stored traces) → `runner` (every case ×
variant, concurrent, cached; answers from `generate`) → `metrics` (the registry and the built-in metrics; Python
unit tests run in `sandbox`) → `results` (a run as plain data) → `report` (HTML and the terminal table),
`compare` (two runs, paired bootstrap), `stats` (bootstrap CIs). `scoring` scores answers that already exist
(stored traces, labelled examples) and `calibrate` measures a judge against human labels.

Layer: imports `fmstack.app.prompts`, `fmstack.gateway` and `fmstack.core`; the CLI imports it.
"""
