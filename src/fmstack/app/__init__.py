"""The application layer: what is built on models — versioned prompts (`prompts`), retrieval-augmented generation
(`rag`) and evaluation of model outputs (`eval`).

Layer: imports `fmstack.gateway` (local model calls go through it, traced like a request to the server),
`fmstack.engines` and `fmstack.core`; `fmstack.server` and `fmstack.cli` import it. It never imports
`fmstack.model` (its sibling layer), the server or the CLI. Inside it, `eval` may use `prompts` (a suite can name
stored prompts); `prompts` and `rag` import neither each other nor `eval`.
"""
