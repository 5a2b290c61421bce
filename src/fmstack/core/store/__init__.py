"""The one store: SQLite (WAL) in the data directory, or PostgreSQL; SQLAlchemy models, Alembic migrations.

`open_store(settings)` migrates it to the newest schema (`migrations/versions/`) and returns a session factory.
Its tables, in `schema`:

- requests: `traces` (one row per model call, success or failure: who asked and through what — app, user, API
  key name, stored prompt, route and variant, eval run — then the answer, tokens, latency and cost) and
  `feedback` (a rating, a better answer or a comment on a trace);
- evaluation: `eval_runs`, `eval_results` (a case answered by one model through one prompt, with every
  metric's score), `eval_cache` (outputs reused when a suite runs again unchanged), `trace_scores` (metrics
  scored on stored traces after the fact), `judge_calibrations` (a judge's agreement with human labels);
- prompts: `prompt_versions` (immutable, numbered), `prompt_aliases` and `prompt_alias_moves` (their history);
- RAG: `rag_collections`, `rag_documents`, `rag_chunks` (text, position and embedding), with a full-text
  index for keyword search (the FTS5 table `rag_chunks_fts` on SQLite, a tsvector column on PostgreSQL) and,
  on a PostgreSQL server with pgvector, a vector column;
- access: `api_keys` (name, app, scopes, limits and budget of each key, and the sha256 of its secret; see
  `fmstack.core.keys`);
- human review: `review_policies` (per app: its stage, crawl, walk or run, and settings), `review_stage_moves`
  (every stage change, with the numbers at the time) and `review_items` (the queue: held crawl answers, samples,
  thumbs-downs, low judge scores, with each decision; see `fmstack.app.review`);
- A/B serving: `ab_routes` (a public name), `ab_variants` (its weighted variants, never dropped while it lives)
  and `ab_changes` (every create, split, promote, rollback and delete, with the weights before and after; see
  `fmstack.app.ab`). The dashboard reads the traces through the covering index `ix_traces_dashboard`;
- the closed loop: `loop_runs` (each `fmstack loop run` of an app: its data window, the step it reached, what each
  step produced and how it ended; see `fmstack.loop`).

`traces` writes trace rows off the token path (`TraceWriter`) and reads traces and feedback back. Layer: part of
`fmstack.core`; imports only `fmstack.core.config` and `fmstack.core.errors` from fmstack.
"""

from fmstack.core.store.db import open_store
from fmstack.core.store.schema import Feedback, Trace

__all__ = ["Feedback", "Trace", "open_store"]
