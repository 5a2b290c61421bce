"""`fmstack rag …`: ingest documents into collections, search them, ask questions with citations, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fmstack.cli.common import JSON, Col, command_group, console, err, show_rows, store
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError

if TYPE_CHECKING:
    from fmstack.app.rag.evaluate import RetrievalEval

APP = "fmstack-rag"

rag_app = command_group(
    "Retrieval-augmented generation: ingest documents, then ask questions answered with citations.\n\n"
    'Example: fmstack rag ingest docs/ --collection docs && fmstack rag ask "How do I …?" --collection docs',
    no_args_is_help=True,
)


def _rag():
    from fmstack.app.rag import Rag
    from fmstack.core.registry import Registry
    from fmstack.engines.pool import EnginePool

    settings = get_settings()
    return Rag(store(settings), settings, EnginePool(Registry(settings), settings))


def _filters(source: str | None, meta: list[str] | None):
    from fmstack.app.rag import Filters

    metadata = {}
    for item in meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FmstackError(f"--meta takes KEY=VALUE, not '{item}'.")
        try:
            metadata[key] = json.loads(value)  # numbers and booleans compare as such
        except ValueError:
            metadata[key] = value
    return Filters(source, metadata)


@rag_app.command("ingest")
def ingest(
    path: Path = typer.Argument(..., help="A file or a folder (read recursively)."),
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to add to (created if new)."),
    chunk_tokens: int = typer.Option(200, "--chunk-tokens", help="Chunk size in the embedding model's tokens."),
    overlap: int = typer.Option(40, "--overlap", help="Tokens shared by consecutive chunks (--by tokens)."),
    by: str = typer.Option("tokens", "--by", help="tokens (fixed windows) or structure (headings, paragraphs)."),
    text_field: str = typer.Option("text", "--text-field", help="The field holding the text in JSONL files."),
) -> None:
    """Ingest text, Markdown, HTML, PDF and JSONL files; re-running updates only what changed. Exits 1 if a file
    was skipped (each is listed with the reason).

    Example: fmstack rag ingest docs/ --collection docs --chunk-tokens 200 --overlap 40 --by tokens
    """
    from fmstack.app.rag import ChunkConfig

    rag = _rag()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(f"ingesting into {collection}", total=None)

            def progress(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=f"ingesting {name[:40]}")

            report = rag.ingest(path, collection, ChunkConfig(chunk_tokens, overlap, by), text_field, progress)
    finally:
        rag.pool.close()
    r = report
    console.print(
        f"[bold]{r.collection}[/]: {r.files} files — {r.added} added, {r.updated} updated, {r.unchanged} unchanged, "
        f"{r.removed} removed, {len(r.skipped)} skipped",
        soft_wrap=True,
    )
    console.print(
        f"chunks: {r.chunks_total} in the collection; {r.chunks_added} added ({r.chunks_embedded} embedded, "
        f"{r.chunks_reused} reused), {r.chunks_kept} kept, {r.chunks_removed} removed · {r.seconds:.1f} s "
        f"({r.embed_seconds:.1f} s embedding)",
        soft_wrap=True,
    )
    for source, reason in r.skipped:
        err.print(f"[yellow]skipped[/] {source}: {reason}", soft_wrap=True, highlight=False)
    if r.skipped:
        raise typer.Exit(1)


COLLECTION_COLUMNS = (
    Col("collection", lambda c: c["name"], no_wrap=True),
    Col("documents", lambda c: str(c["documents"])),
    Col("chunks", lambda c: str(c["chunks"])),
    Col("embedding model", lambda c: c["embedding_model"]),
    Col("updated", lambda c: c["updated_at"][:19]),
)


@rag_app.command("list")
def list_collections(as_json: bool = JSON) -> None:
    """List collections with their documents and chunks.

    Example: fmstack rag list --json
    """
    from fmstack.app.rag.collections import list_collections as collections

    with store()() as s:
        rows = collections(s)
    show_rows(rows, COLLECTION_COLUMNS, as_json)


@rag_app.command("delete")
def delete(collection: str = typer.Argument(..., help="The collection to delete, with its index.")) -> None:
    """Delete a collection: its documents, chunks and index files.

    Example: fmstack rag delete docs
    """
    _rag().delete(collection)
    console.print(f"deleted collection {collection}")


HIT_COLUMNS = (  # --json prints each hit's `as_dict()`: these fields untruncated, with the scores and ids
    Col("source", lambda h: h.source, no_wrap=True),
    Col("where", lambda h: h.location()),
    Col("similarity", lambda h: f"{h.similarity:.3f}"),
    Col("rank vec/kw", lambda h: f"{h.vector_rank or '-'}/{h.keyword_rank or '-'}"),
    Col("text", lambda h: h.text[:160].replace("\n", " ")),
)


@rag_app.command("search")
def search(
    query: str = typer.Argument(..., help="What to look for."),
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to search."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many chunks."),
    source: str = typer.Option(None, "--source", help='Only sources matching this glob, e.g. "docs/*.md".'),
    meta: list[str] = typer.Option(None, "--meta", help="Only documents with this field value: KEY=VALUE."),
    rerank: str = typer.Option("none", help="none, similarity or mmr."),
    as_json: bool = JSON,
) -> None:
    """Show the chunks retrieval finds (keyword + vector, fused), with scores and positions.

    Example: fmstack rag search "first step on the Moon" --collection wiki --top-k 5
    """
    rag = _rag()
    try:
        hits = rag.search(collection, query, top_k, _filters(source, meta), rerank)
    finally:
        rag.pool.close()
    show_rows(hits, HIT_COLUMNS, as_json, numbered=True)


@rag_app.command("ask")
def ask(
    question: str = typer.Argument(..., help="The question."),
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to answer from."),
    model: str = typer.Option(None, "--model", "-m", help="Chat model (default: FMSTACK_DEFAULT_MODEL)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Chunks given to the model."),
    source: str = typer.Option(None, "--source", help="Only sources matching this glob."),
    meta: list[str] = typer.Option(None, "--meta", help="Only documents with this field value: KEY=VALUE."),
    rerank: str = typer.Option("none", help="none, similarity or mmr."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Longest answer, in tokens."),
    url: str = typer.Option(
        None, "--url", help="A running fmstack server (e.g. http://127.0.0.1:8000) instead of one in this process."
    ),
) -> None:
    """Answer a question from a collection, streaming, with numbered citations to source and position.

    Example: fmstack rag ask "Who composed An American in Paris?" --collection wiki --model smollm2-135m-instruct
    """
    from fmstack.app.rag.chat import Retrieval
    from fmstack.app.rag.rag_client import stream_answer

    settings = get_settings()
    model = model or settings.default_model
    filters = _filters(source, meta)
    if url is None:
        sources = _ask_here(settings, collection, model, question, max_tokens, Retrieval(top_k, filters, rerank))
    else:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": 0,
            "top_k": top_k,
            "rerank": rerank,
        }
        if filters:
            body["filters"] = {"source": filters.source, "metadata": filters.metadata}
        sources = stream_answer(url, collection, body, _show)
    console.print()
    if not sources:
        console.print("[dim](no sources: nothing relevant was retrieved)[/]")
    for s in sources:
        console.print(f"[bold][{s['id']}][/] {s['source']} — {s['location']}", soft_wrap=True, highlight=False)


def _show(text: str) -> None:
    console.out(text, end="", highlight=False)


def _ask_here(settings, collection: str, model: str, question: str, max_tokens: int, how) -> list[dict]:
    """`rag ask` in this process, through the gateway: the same answer and trace as the server's RAG route."""
    import asyncio

    from fmstack.app.rag import Rag
    from fmstack.app.rag.chat import rag_chat
    from fmstack.app.rag.collections import get_collection
    from fmstack.gateway import CallContext, Gateway
    from fmstack.gateway.params import generation_request

    gateway = Gateway.open(settings)
    try:
        with gateway.sessions() as s:
            get_collection(s, collection)  # fail fast, before any model loads
        messages = [{"role": "user", "content": question}]
        params = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        call = gateway.call("rag.chat.completions", "chatcmpl", params | {"collection": collection}, CallContext(APP))
        request = generation_request(messages, {"max_tokens": max_tokens, "temperature": 0})

        async def answer() -> list[dict]:
            with console.status(f"loading {model}"):
                await asyncio.to_thread(gateway.pool.get, model)
            rag = Rag(gateway.sessions, settings, gateway.pool)
            reply = await rag_chat(gateway, rag, call, collection, model, request, how)
            async for delta in reply.deltas:
                _show(delta.text)
            return reply.sources

        return asyncio.run(answer())
    finally:
        gateway.close()


@rag_app.command("eval")
def evaluate(
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to evaluate."),
    questions: Path = typer.Option(..., "--questions", help="YAML/JSONL question set, or an eval suite."),
    k: int = typer.Option(10, "-k", help="Depth for recall@k and MRR."),
    rerank: str = typer.Option("none", help="none, similarity or mmr."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the results as JSON here."),
    cases: Path = typer.Option(
        None, "--cases", help="Also write eval-suite cases (grounded prompts + retrieved context) as JSONL here."
    ),
    top_k: int = typer.Option(5, "--top-k", help="Chunks per case in --cases (what `rag ask` gives the model)."),
    mode: str = typer.Option("hybrid", help="hybrid, or vector / keyword alone (to see what fusion adds)."),
) -> None:
    """Retrieval quality: recall@1/3/5/10 and MRR against each question's source document, and how the
    "I don't know" threshold separates answerable from unanswerable questions.

    Example: fmstack rag eval --collection wiki --questions examples/rag/questions.yaml -o results.json
    """
    from fmstack.app.rag.evaluate import evaluate as run
    from fmstack.app.rag.evaluate import load_questions

    rag = _rag()
    try:
        items = load_questions(questions)
        with console.status(f"retrieving for {len(items)} questions"):
            result = run(rag, collection, items, k, rerank, mode)
    finally:
        rag.pool.close()
    console.print(f"collection [bold]{collection}[/], {mode} retrieval")
    console.print(_recall_table(result))
    line = f"threshold {result.threshold}: answers {result.answered_when_answerable:.0%} of answerable"
    if result.idk_when_unanswerable is not None:
        line += f", says I don't know to {result.idk_when_unanswerable:.0%} of unanswerable"
    console.print(line)
    for r in result.missed():
        console.print(f"[yellow]not in top {k}:[/] {r.question} (got {', '.join(r.sources)})", soft_wrap=True)
    if output:
        result.write(output)
        console.print(f"wrote {output}")
    if cases:
        console.print(f"wrote {result.write_cases(cases, top_k)} eval cases to {cases}")


def _recall_table(result: RetrievalEval) -> Table:
    """Recall@k and MRR at document level and, with reference answers, at passage level."""
    table = Table("level", "questions", "rerank", *[f"recall{c}" for c in result.recall], f"MRR@{result.k}")
    levels = [("document", result.recall, result.mrr)]
    if result.answer_recall:
        levels.append(("answer passage", result.answer_recall, result.answer_mrr))
    for level, recall, mrr in levels:
        scores = [f"{v:.3f}" for v in (*recall.values(), mrr)]
        table.add_row(level, str(result.questions), result.rerank, *scores)
    return table
