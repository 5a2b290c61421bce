"""Tables, as SQLAlchemy 2 ORM classes. Every change to them goes with a numbered Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Trace(Base):
    """One row per request, success or failure."""

    __tablename__ = "traces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(200), index=True)
    engine: Mapped[str | None] = mapped_column(String(64))
    app: Mapped[str | None] = mapped_column(String(200), index=True)
    user: Mapped[str | None] = mapped_column(String(200))
    prompt_name: Mapped[str | None] = mapped_column(String(200), index=True)  # a stored prompt's name, when used
    prompt_version: Mapped[str | None] = mapped_column(String(200))  # its version number (as text, since 0001)
    request: Mapped[dict | None] = mapped_column(JSON)
    response_text: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16), index=True)  # ok | error | cancelled
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    retrieval: Mapped[dict | None] = mapped_column(JSON)  # RAG: the collection, query and chunks the answer used
    route: Mapped[str | None] = mapped_column(String(200), index=True)  # A/B: the public name that was asked for
    variant: Mapped[str | None] = mapped_column(String(200))  # ... and the variant that answered
    key_name: Mapped[str | None] = mapped_column(String(200))  # the API key's name, never the key
    eval_run_id: Mapped[str | None] = mapped_column(String(200), index=True)  # the eval run that asked for it
    cached_tokens: Mapped[int | None] = mapped_column(Integer)  # prompt tokens reused from the prefix cache
    draft_tokens: Mapped[int | None] = mapped_column(Integer)  # speculative tokens proposed ...
    accepted_tokens: Mapped[int | None] = mapped_column(Integer)  # ... and accepted

    feedback: Mapped[list[Feedback]] = relationship(back_populates="trace", order_by="Feedback.id")
    scores: Mapped[list[TraceScore]] = relationship(order_by="TraceScore.id")


class Feedback(Base):
    """A user's judgement of one answer: thumbs up/down, a better answer, a comment."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rating: Mapped[int | None] = mapped_column(Integer)
    correction: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)

    trace: Mapped[Trace] = relationship(back_populates="feedback")


class EvalRun(Base):
    """One `fmstack eval run`: a suite across models and prompts."""

    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    suite: Mapped[str] = mapped_column(String(200), index=True)
    suite_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[list] = mapped_column(JSON, default=list)

    results: Mapped[list[EvalResult]] = relationship(order_by="EvalResult.id", cascade="all, delete-orphan")


class EvalResult(Base):
    """One case answered by one model through one prompt, with every metric's score."""

    __tablename__ = "eval_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str | None] = mapped_column(String(200))
    input: Mapped[dict | list | None] = mapped_column(JSON)
    reference: Mapped[dict | list | str | None] = mapped_column(JSON)
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    scores: Mapped[dict] = mapped_column(JSON, default=dict)


class EvalCache(Base):
    """Model outputs by (model, prompt, parameters, input): re-running an unchanged suite costs nothing."""

    __tablename__ = "eval_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model: Mapped[str] = mapped_column(String(200))
    output: Mapped[dict] = mapped_column(JSON)


class TraceScore(Base):
    """A metric's score of a stored trace, computed after the fact (`fmstack eval score --traces`)."""

    __tablename__ = "trace_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    metric: Mapped[str] = mapped_column(String(200), index=True)
    value: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    judge: Mapped[str | None] = mapped_column(String(200))


class JudgeCalibration(Base):
    """How far a judge model agrees with human labels on a metric (`fmstack eval calibrate`)."""

    __tablename__ = "judge_calibrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    judge: Mapped[str] = mapped_column(String(200), index=True)
    metric: Mapped[str] = mapped_column(String(200))
    n: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float | None] = mapped_column(Float)
    kappa: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class PromptVersion(Base):
    """One immutable version of a stored prompt: its templates, few-shot examples and model parameters."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_prompt_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, 3… per name
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    system: Mapped[str | None] = mapped_column(Text)  # Jinja2 template
    user: Mapped[str | None] = mapped_column(Text)  # Jinja2 template
    examples: Mapped[list] = mapped_column(JSON, default=list)  # [{"user": template, "assistant": template}]
    params: Mapped[dict] = mapped_column(JSON, default=dict)  # model, temperature, max_tokens…
    variables: Mapped[list] = mapped_column(JSON, default=list)  # derived from the templates, sorted
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the content: identical saves are no-ops
    note: Mapped[str | None] = mapped_column(Text)  # what changed, in the author's words


class PromptAlias(Base):
    """A movable name (`production`, `staging`…) for one version of a prompt."""

    __tablename__ = "prompt_aliases"
    __table_args__ = (ForeignKeyConstraint(["name", "version"], ["prompt_versions.name", "prompt_versions.version"]),)

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromptAliasMove(Base):
    """Every move of an alias, kept: when it pointed where (a rollback is a move back)."""

    __tablename__ = "prompt_alias_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    name: Mapped[str] = mapped_column(String(100), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer)  # None: the alias was new
    to_version: Mapped[int] = mapped_column(Integer)


@event.listens_for(PromptVersion, "before_update")
def _versions_are_immutable(_mapper, _connection, target: PromptVersion) -> None:
    raise ValueError(f"Prompt versions are immutable: save a new version of '{target.name}' instead.")


class RagCollection(Base):
    """A named set of documents for retrieval; its vector index lives in files under FMSTACK_HOME/rag/{uid}/."""

    __tablename__ = "rag_collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    embedding_model: Mapped[str] = mapped_column(String(200))
    dimensions: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer, default=0)  # bumped by every change to its chunks
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    # Since 0010: how its vectors are made (every vector of a collection by the same model: a change of backend or
    # a tuned model is a new index version, switched atomically) and its calibrated "I don't know" threshold.
    embedding_backend: Mapped[str] = mapped_column(String(32), default="sentence-transformers")
    embedding_path: Mapped[str | None] = mapped_column(Text)  # a tuned model's folder, None for the registry model
    index_version: Mapped[int] = mapped_column(Integer, default=1)
    min_similarity: Mapped[float | None] = mapped_column(Float)  # None: the global default (answer.MIN_SIMILARITY)
    calibration: Mapped[dict | None] = mapped_column(JSON)  # how min_similarity was chosen: the curve, the counts


class RagIndexVersion(Base):
    """One set of vectors of a collection (0010): the model that made them, and whether it is the active one.
    A new version is built beside the active one, verified, then switched to in one transaction; the version it
    replaced keeps its vectors (files under the collection's folder) so it can be switched back to."""

    __tablename__ = "rag_index_versions"
    __table_args__ = (UniqueConstraint("collection_id", "version", name="uq_rag_index_versions_collection_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("rag_collections.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    embedding_model: Mapped[str] = mapped_column(String(200))
    embedding_backend: Mapped[str] = mapped_column(String(32))
    embedding_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # building | active | previous | rejected | failed
    reason: Mapped[str | None] = mapped_column(Text)  # what built it (tune, reembed), or why it was rejected
    report: Mapped[dict] = mapped_column(JSON, default=dict)  # verification: recall/MRR before and after


class RagDocument(Base):
    """One ingested file, with the hash of its content: an unchanged file is skipped on re-ingest."""

    __tablename__ = "rag_documents"
    __table_args__ = (UniqueConstraint("collection_id", "path", name="uq_rag_documents_collection_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("rag_collections.id", ondelete="CASCADE"), index=True)
    root: Mapped[str] = mapped_column(Text)  # the PATH it was ingested from: re-ingesting PATH removes the missing
    path: Mapped[str] = mapped_column(Text)  # absolute
    source: Mapped[str] = mapped_column(Text)  # as cited: relative to the root's parent
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    chunking: Mapped[str] = mapped_column(String(200))  # the chunking settings its chunks were made with
    title: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RagChunk(Base):
    """A passage of a document with where it is (characters, page, heading, line) and its unit-length embedding
    (float32 bytes). Its id is its key in the vector index and its rowid in the keyword index."""

    __tablename__ = "rag_chunks"
    __table_args__ = (
        UniqueConstraint("document_id", "sha256", name="uq_rag_chunks_document_sha256"),
        {"sqlite_autoincrement": True},  # ids are vector index keys: never reused
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("rag_collections.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("rag_documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    heading: Mapped[str | None] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer)
    page_end: Mapped[int | None] = mapped_column(Integer)
    line: Mapped[int | None] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class ApiKey(Base):
    """A key that may call the server: the app its calls are traced under, what it may do (scopes), how fast
    (requests and tokens per minute) and how much it may spend (USD per day or month). The secret is stored only as
    its sha256; `prefix` (its first characters) tells keys apart in listings."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)  # kept when revoked: traces name it
    app: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list] = mapped_column(JSON)  # inference | feedback | admin
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_period: Mapped[str | None] = mapped_column(String(8))  # day | month (calendar, UTC)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# A key's recent traces, read on every metered request (rate limits, budgets): since 0007.
Index("ix_traces_key_name_created_at", Trace.key_name, Trace.created_at)


class ReviewPolicy(Base):
    """How an app's answers are reviewed by people (`fmstack review policy`): its stage and the settings each stage
    reads. crawl: every answer is held until a person approves it; walk: a share is reviewed after delivery; run: an
    AI judge scores answers and the low ones are reviewed."""

    __tablename__ = "review_policies"

    app: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stage: Mapped[str] = mapped_column(String(16))  # crawl | walk | run
    share: Mapped[float] = mapped_column(Float, default=0.2)  # of delivered answers sampled for review (walk, run)
    double_share: Mapped[float] = mapped_column(Float, default=0.0)  # of queued items a second reviewer also reviews
    judge_model: Mapped[str | None] = mapped_column(String(200))  # the generic AI judge (a chat model)
    judge_metric: Mapped[str] = mapped_column(String(200), default="rubric")
    judge_classifier: Mapped[str | None] = mapped_column(Text)  # a judge trained on the reviews, used when set
    judge_share: Mapped[float] = mapped_column(Float, default=1.0)  # of answers the judge scores in run
    threshold: Mapped[float] = mapped_column(Float, default=0.7)  # judge scores (0-1) under it are queued in run
    rubric: Mapped[str | None] = mapped_column(Text)  # shown to reviewers, and the rubric judge's criteria
    hold_seconds: Mapped[float] = mapped_column(Float, default=300.0)  # how long a crawl request waits for a person
    bars: Mapped[dict] = mapped_column(JSON, default=dict)  # per stage: the numbers that must hold to move on


class ReviewStageMove(Base):
    """Every change of an app's review stage, with the numbers at the time and whether they met the bars."""

    __tablename__ = "review_stage_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    app: Mapped[str] = mapped_column(String(200), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(16))  # None: the policy was created
    to_stage: Mapped[str] = mapped_column(String(16))
    by: Mapped[str | None] = mapped_column(String(200))
    bars_met: Mapped[bool | None] = mapped_column(Boolean)  # None: no bar applies (creation, a move back)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)  # moved on although a bar was not met
    numbers: Mapped[dict] = mapped_column(JSON, default=dict)  # the stage's review numbers when it moved


class ReviewItem(Base):
    """One answer for a person to review. A held crawl answer is stored here before anyone sees it, so a restart
    loses none; `copy` 1 is the second review of a double-reviewed answer (agreement between reviewers)."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("trace_id", "copy", name="uq_review_items_trace_copy"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    app: Mapped[str] = mapped_column(String(200), index=True)
    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    copy: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str] = mapped_column(String(16))  # the app's stage when it was queued
    reason: Mapped[str] = mapped_column(String(32))  # crawl | sampled | thumbs-down | judge-low | judge-error
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    answer: Mapped[str] = mapped_column(Text)  # the model's answer, as generated
    edited_text: Mapped[str | None] = mapped_column(Text)  # the reviewer's version: the correction
    edit_distance: Mapped[float | None] = mapped_column(Float)  # answer -> what was approved, 0 (none) to 1
    reject_reason: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String(200), index=True)
    opened_by: Mapped[str | None] = mapped_column(String(200))  # who has it open now (`review next`)
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    skipped_by: Mapped[list] = mapped_column(JSON, default=list)  # reviewers who passed it on
    reviewer: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float | None] = mapped_column(Float)  # the reviewer's time on it
    judge_score: Mapped[float | None] = mapped_column(Float)  # 0-1
    judge_reason: Mapped[str | None] = mapped_column(Text)
    judge: Mapped[str | None] = mapped_column(String(200))  # the judge that scored it


# The dashboard's aggregates over a time range read this index alone, never the trace rows: since 0009.
Index(
    "ix_traces_dashboard",
    Trace.created_at,
    Trace.app,
    Trace.route,
    Trace.variant,
    Trace.status,
    Trace.latency_ms,
    Trace.ttft_ms,
    Trace.prompt_tokens,
    Trace.completion_tokens,
    Trace.cost,
    Trace.id,
)


class AbRoute(Base):
    """A public name (often a model's own name) whose requests are split between variants by weight (A/B)."""

    __tablename__ = "ab_routes"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    variants: Mapped[list[AbVariant]] = relationship(order_by="AbVariant.position", cascade="all, delete-orphan")


class AbVariant(Base):
    """One arm of a route. Variants are never removed while the route lives (weight 0 instead), and keep their
    position, so a user's sticky bucket and a rollback's weights always find them."""

    __tablename__ = "ab_variants"
    __table_args__ = (UniqueConstraint("route", "name", name="uq_ab_variants_route_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    route: Mapped[str] = mapped_column(ForeignKey("ab_routes.name", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))  # what traces record as `variant`
    model: Mapped[str] = mapped_column(String(200))  # a registry model
    prompt: Mapped[str | None] = mapped_column(String(200))  # a stored prompt ref: for prompt routes, not served yet
    weight: Mapped[int] = mapped_column(Integer)  # percent; a route's weights sum to 100


class AbChange(Base):
    """Every change of a route's split (create, split, promote, rollback, delete), with the weights before and after.
    No foreign key: the history outlives a deleted route."""

    __tablename__ = "ab_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    route: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(16))
    before: Mapped[dict | None] = mapped_column(JSON)  # {variant: weight}; None: the route was new
    after: Mapped[dict | None] = mapped_column(JSON)  # None: the route was deleted
    undoes: Mapped[int | None] = mapped_column(Integer)  # a rollback: the change it undid
    actor: Mapped[str | None] = mapped_column(String(200))  # who: the OS user (CLI) or the API key's name
    gate: Mapped[dict | None] = mapped_column(JSON)  # a gated promotion: the comparisons it passed
    # a prompt route's promotion, or its rollback: the move of the route's alias it made (prompt_alias_moves.id)
    alias_move: Mapped[int | None] = mapped_column(Integer)


class LoopRun(Base):
    """One `fmstack loop run` of an app: traces since the last completed loop -> training data -> candidate -> gate
    -> GGUF -> registered -> A/B share. `steps` holds what each finished step produced, so an interrupted run can
    resume from the first unfinished one; `until` of the last completed run is where the next one's data starts."""

    __tablename__ = "loop_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(200), index=True)
    base: Mapped[str] = mapped_column(String(200))  # the registry model fine-tuned
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the data window: None = from the start
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))  # running | done | gate-failed | stopped | failed | interrupted
    step: Mapped[str] = mapped_column(String(32))  # the step running, or the one it ended at
    candidate: Mapped[str | None] = mapped_column(String(200))  # the registry name the candidate gets
    workdir: Mapped[str] = mapped_column(Text)  # data, checkpoints and the GGUF of this run
    config: Mapped[dict] = mapped_column(JSON, default=dict)  # the validated loop config it ran with
    steps: Mapped[dict] = mapped_column(JSON, default=dict)  # step -> what it produced (paths, counts, scores)
    reason: Mapped[str | None] = mapped_column(Text)  # why it stopped (the gate's scores, an error)
    pid: Mapped[int | None] = mapped_column(Integer)  # the process running it: a dead one means interrupted
    host: Mapped[str | None] = mapped_column(String(200))


# One running loop per app, whoever starts it: two `fmstack loop run` at once cannot both hold a running row (0013).
Index(
    "ux_loop_runs_running",
    LoopRun.app,
    unique=True,
    sqlite_where=LoopRun.status == "running",
    postgresql_where=LoopRun.status == "running",
)
