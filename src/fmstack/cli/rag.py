"""`fmstack rag …`: ingest documents into collections, search them, ask questions with citations, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fmstack.cli.common import JSON, Col, command_group, console, err, print_json, show_rows, store
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError

if TYPE_CHECKING:
    from fmstack.app.rag.evaluate import RetrievalEval

APP = "fmstack-rag"
RERANK_HELP = "none, similarity, mmr, llm (the chat model judges each passage) or cross-encoder (see `rag tune`)."
EXPAND_HELP = "none, or hyde: the chat model writes a hypothetical answer and retrieval searches with it too."
EXPAND_MODEL_HELP = "Chat model of --expand hyde (default: the default)."

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
    backend: str = typer.Option(
        None, "--backend", help="How a new collection's vectors are made: sentence-transformers or onnx-int8 (~2.5x)."
    ),
    contextual: bool = typer.Option(
        False, "--contextual", help="Start every chunk's heading path with its document's title (embedded, indexed)."
    ),
) -> None:
    """Ingest text, Markdown, HTML, PDF and JSONL files; re-running updates only what changed. Exits 1 if a file
    was skipped (each is listed with the reason).

    Example: fmstack rag ingest docs/ --collection docs --chunk-tokens 200 --overlap 40 --by tokens --backend onnx-int8
    """
    from fmstack.app.rag import ChunkConfig

    rag = _rag()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(f"ingesting into {collection}", total=None)

            def progress(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=f"ingesting {name[:40]}")

            config = ChunkConfig(chunk_tokens, overlap, by, contextual)
            report = rag.ingest(path, collection, config, text_field, progress, backend)
    finally:
        rag.close()
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
    Col("backend", lambda c: c["backend"]),
    Col("version", lambda c: str(c["index_version"])),
    Col("min similarity", lambda c: "-" if c["min_similarity"] is None else f"{c['min_similarity']:.3f}"),
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
    rerank: str = typer.Option("none", help=RERANK_HELP),
    rerank_model: str = typer.Option(None, "--rerank-model", help="Chat model of --rerank llm (default: the default)."),
    expand: str = typer.Option("none", help=EXPAND_HELP),
    expand_model: str = typer.Option(None, "--expand-model", help=EXPAND_MODEL_HELP),
    as_json: bool = JSON,
) -> None:
    """Show the chunks retrieval finds (keyword + vector, fused), with scores and positions.

    Example: fmstack rag search "first step on the Moon" --collection wiki --top-k 5
    """
    rag = _rag()
    options = {"rerank_model": rerank_model, "expand": expand, "expand_model": expand_model}
    try:
        hits = rag.search(collection, query, top_k, _filters(source, meta), rerank, **options)
    finally:
        rag.close()
    show_rows(hits, HIT_COLUMNS, as_json, numbered=True)


@rag_app.command("ask")
def ask(
    question: str = typer.Argument(..., help="The question."),
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to answer from."),
    model: str = typer.Option(None, "--model", "-m", help="Chat model (default: FMSTACK_DEFAULT_MODEL)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Chunks given to the model."),
    source: str = typer.Option(None, "--source", help="Only sources matching this glob."),
    meta: list[str] = typer.Option(None, "--meta", help="Only documents with this field value: KEY=VALUE."),
    rerank: str = typer.Option("none", help=RERANK_HELP),
    rerank_model: str = typer.Option(None, "--rerank-model", help="Chat model of --rerank llm (default: the default)."),
    expand: str = typer.Option("none", help=EXPAND_HELP),
    expand_model: str = typer.Option(None, "--expand-model", help=EXPAND_MODEL_HELP),
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
        how = Retrieval(top_k, filters, rerank, rerank_model=rerank_model, expand=expand, expand_model=expand_model)
        sources = _ask_here(settings, collection, model, question, max_tokens, how)
    else:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": 0,
            "top_k": top_k,
            "rerank": rerank,
            "rerank_model": rerank_model,
            "expand": expand,
            "expand_model": expand_model,
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
            rag = Rag(gateway.sessions, settings, gateway.pool, gateway)
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
    rerank: str = typer.Option("none", help=RERANK_HELP),
    rerank_model: str = typer.Option(None, "--rerank-model", help="Chat model of --rerank llm (default: the default)."),
    expand: str = typer.Option("none", help=EXPAND_HELP),
    expand_model: str = typer.Option(None, "--expand-model", help=EXPAND_MODEL_HELP),
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
            options = {"rerank_model": rerank_model, "expand": expand, "expand_model": expand_model}
            result = run(rag, collection, items, k, rerank, mode, **options)
    finally:
        rag.close()
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


def _with_gateway():
    """A gateway (for the model's calls, traced) and a `Rag` sharing its store and models."""
    from fmstack.app.rag import Rag
    from fmstack.gateway import Gateway

    settings = get_settings()
    gateway = Gateway.open(settings)
    return gateway, Rag(gateway.sessions, settings, gateway.pool, gateway)


def _question_set(path: Path | None):
    from fmstack.app.rag.evaluate import load_questions

    return load_questions(path) if path else None


@rag_app.command("calibrate")
def calibrate(
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to calibrate."),
    model: str = typer.Option(None, "--model", "-m", help="Chat model writing the questions (default: the default)."),
    samples: int = typer.Option(40, "--samples", help="Chunks to write a question about."),
    questions: Path = typer.Option(None, "--questions", help="A hand-written question set to refine it with."),
    plot: Path = typer.Option(None, "--plot", help="Where to draw the trade-off curve (PNG)."),
    expand: str = typer.Option("none", help=EXPAND_HELP + " Calibrates the threshold that searches with it use."),
    expand_model: str = typer.Option(None, "--expand-model", help=EXPAND_MODEL_HELP),
    as_json: bool = JSON,
) -> None:
    """Choose the collection's "I don't know" threshold from the collection itself: questions the local model writes
    about its chunks (answerable) and off-topic ones (unanswerable); stores it, prints the trade-off curve. With
    --expand hyde, the threshold of searches that expand the question (their hits' similarity is the hypothetical
    answer's), stored beside the plain one.

    Example: fmstack rag calibrate --collection docs --model qwen2.5-0.5b-instruct --plot calibration.png
    """
    from fmstack.app.rag.calibrate import calibrate as run

    gateway, rag = _with_gateway()
    try:
        items = _question_set(questions)
        with console.status(f"writing questions about {collection} and measuring them"):
            result = run(rag, gateway, collection, model or gateway.settings.default_model, samples, items, plot,
                         expand=expand, expand_model=expand_model)  # fmt: skip
    finally:
        gateway.close()
    if as_json:
        print_json(result.as_dict())
        return
    previous = "the default" if result.previous is None else f"{result.previous:.3f}"
    console.print(
        f"[bold]{collection}[/]: min_similarity{' (expand hyde)' if expand == 'hyde' else ''} {result.threshold:.3f} "
        f"(was {previous}) — answers "
        f"{result.answered_when_answerable:.0%} of {result.answerable} answerable, says I don't know to "
        f"{result.idk_when_unanswerable:.0%} of {result.unanswerable} unanswerable "
        f"({result.synthetic_kept} of {result.synthetic_written} written questions kept)",
        soft_wrap=True,
    )
    table = Table("threshold", "answerable answered", "unanswerable: I don't know")
    for t, answered, idk in result.curve[20:81:5]:
        table.add_row(f"{t:.2f}", f"{answered:.0%}", f"{idk:.0%}")
    console.print(table)
    if result.plot:
        console.print(f"wrote {result.plot}")


@rag_app.command("tune")
def tune(
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to tune retrieval for."),
    model: str = typer.Option(None, "--model", "-m", help="Chat model writing the questions (default: the default)."),
    samples: int = typer.Option(200, "--samples", help="Chunks to write a training question about."),
    epochs: int = typer.Option(2, "--epochs", help="Passes over the training pairs."),
    questions: Path = typer.Option(None, "--questions", help="A hand-written question set the new version must pass."),
    cross_encoder: bool = typer.Option(False, "--cross-encoder", help="Also train a cross-encoder for reranking."),
    as_json: bool = JSON,
) -> None:
    """Fine-tune the embedding model on questions the local model writes about the collection, re-embed it into a
    new index version, and switch to it only if held-out recall/MRR are no worse (the old version is kept).

    Example: fmstack rag tune --collection docs --model qwen2.5-0.5b-instruct --samples 200 --cross-encoder
    """
    from fmstack.app.rag.tune import TuneOptions
    from fmstack.app.rag.tune import tune as run

    gateway, rag = _with_gateway()
    try:
        items = _question_set(questions)
        options = TuneOptions(samples=samples, epochs=epochs, cross_encoder=cross_encoder)
        with console.status(f"tuning retrieval for {collection}"):
            report = run(rag, gateway, collection, model or gateway.settings.default_model, options, items)
    finally:
        gateway.close()
    if as_json:
        print_json(report.as_dict())
        return
    console.print(
        f"[bold]{collection}[/]: {report.kept} of {report.written} synthetic questions kept — {report.train} to "
        f"train, {report.held_out} held out",
        soft_wrap=True,
    )
    table = Table("set", "vectors", "recall@1", "recall@5", "recall@10", "MRR@10")
    rows = [("held out", report.before, report.after)]
    if report.question_set:
        rows.append(("question set", report.question_set["before"], report.question_set["after"]))
    if report.cross_encoder:
        rows.append(("held out, + cross-encoder", report.cross_encoder["before"], report.cross_encoder["after"]))
    for name, before, after in rows:
        for label, r in (("before", before), ("after", after)):
            recall = r["recall"]
            table.add_row(name, label, *(f"{recall[k]:.3f}" for k in ("@1", "@5", "@10")), f"{r['mrr']:.3f}")
    console.print(table)
    verdict = "[green]switched to[/]" if report.switched else "[yellow]kept aside[/]"
    console.print(f"index version {report.version} {verdict}: {report.reason}", soft_wrap=True)


@rag_app.command("reembed")
def reembed(
    collection: str = typer.Option(..., "--collection", "-c", help="The collection to re-embed."),
    backend: str = typer.Option(..., "--backend", help="sentence-transformers or onnx-int8."),
    questions: Path = typer.Option(None, "--questions", help="A question set the new version must do as well on."),
    as_json: bool = JSON,
) -> None:
    """Re-make every vector of the collection with another backend as a new index version, switched atomically
    (a collection never mixes models); with --questions, only if retrieval stays as good.

    Example: fmstack rag reembed --collection docs --backend onnx-int8 --questions questions.yaml
    """
    from fmstack.app.rag.versions import reembed as run

    rag = _rag()
    try:
        items = _question_set(questions)
        with console.status(f"re-embedding {collection}"):
            report = run(rag, collection, backend, items)
    finally:
        rag.close()
    if as_json:
        print_json(report)
        return
    verdict = "switched to" if report["switched"] else "kept aside (retrieval got worse)"
    console.print(f"{collection}: {report['chunks']} chunks re-embedded by {backend}; version {report['version']} "
                  f"{verdict}", soft_wrap=True)  # fmt: skip


VERSION_COLUMNS = (
    Col("version", lambda v: str(v["version"])),
    Col("status", lambda v: v["status"]),
    Col("backend", lambda v: v["backend"]),
    Col("model", lambda v: v["model"]),
    Col("why", lambda v: v["reason"] or ""),
    Col("created", lambda v: (v["created_at"] or "")[:19]),
)


@rag_app.command("versions")
def versions(
    collection: str = typer.Option(..., "--collection", "-c", help="The collection."),
    activate: int = typer.Option(None, "--activate", help="Switch to this kept version (atomically)."),
    as_json: bool = JSON,
) -> None:
    """List the collection's index versions (active, previous, rejected), or switch back to a kept one.

    Example: fmstack rag versions --collection docs --activate 1
    """
    from fmstack.app.rag import versions as v

    rag = _rag()
    try:
        if activate is not None:
            v.activate(rag, collection, activate)
            console.print(f"{collection}: version {activate} is active")
        rows = v.list_versions(rag, collection)
    finally:
        rag.close()
    show_rows(rows, VERSION_COLUMNS, as_json)
