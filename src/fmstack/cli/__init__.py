"""The `fmstack` command: a thin layer that maps commands to functions of the package."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fmstack import __version__
from fmstack.cli.ab import ab_app
from fmstack.cli.common import JSON, Col, command_group, console, err, preparing, print_json, show_rows, store
from fmstack.cli.data import data_app
from fmstack.cli.distill import distill as train_distill
from fmstack.cli.eval import eval_app
from fmstack.cli.keys import keys_app, refuse_open_network
from fmstack.cli.loop import loop_app
from fmstack.cli.prompt import prompt_app
from fmstack.cli.quantize import compare as models_compare
from fmstack.cli.quantize import quantize as models_quantize
from fmstack.cli.rag import rag_app
from fmstack.cli.review import review_app, suite_app, train_judge
from fmstack.cli.train import train_app
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError

app = command_group(
    "fmstack: serve, trace, monitor, evaluate and adapt foundation models on your machine.\n\nExample: fmstack up",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
traces_app = command_group(
    "Inspect and export request traces.\n\nExample: fmstack traces list --limit 20", no_args_is_help=True
)
app.add_typer(traces_app, name="traces")
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.add_typer(prompt_app, name="prompt")
app.add_typer(rag_app, name="rag")
app.add_typer(train_app, name="train")
app.add_typer(keys_app, name="keys")
app.add_typer(review_app, name="review")
app.add_typer(ab_app, name="ab")
app.add_typer(loop_app, name="loop")
eval_app.add_typer(suite_app, name="suite")  # fmstack eval suite from-reviews
train_app.command("distill")(train_distill)  # its answer filter needs the eval layer too
train_app.command("judge")(train_judge)  # a judge trained on the reviews: it needs the review and model layers


def _version(value: bool) -> None:
    if value:
        console.print(f"fmstack {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """fmstack: a local-first AI engineering stack."""


@app.command()
def up(
    model: str = typer.Option(None, "--model", "-m", help="Model to load at start (default: FMSTACK_DEFAULT_MODEL)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Listen on a non-loopback interface although no API key exists (no authentication)."
    ),
) -> None:
    """Start the server: OpenAI-compatible API, web UI and metrics.

    Example: fmstack up --model smollm2-135m-instruct --port 8000
    """
    import uvicorn

    from fmstack.core.registry import Registry
    from fmstack.server import create_app

    settings = get_settings()
    refuse_open_network(host, insecure)
    name = model or settings.default_model
    spec = Registry(settings).get(name)
    with preparing(name) as progress:
        spec.local_path(settings, progress) if spec.engine != "openai" else None
    application = create_app(settings, preload=[name])
    base = f"http://{host}:{port}"
    console.print(f"[bold]fmstack {__version__}[/] serving [cyan]{name}[/] (data in {settings.home})", soft_wrap=True)
    for label, url in (
        ("API", f"{base}/v1  (OpenAI-compatible; docs at {base}/docs)"),
        ("UI", f"{base}/"),
        ("Metrics", f"{base}/metrics"),
    ):
        console.print(f"  {label:<8} {url}", soft_wrap=True, highlight=False)
    # SIGTERM: stop accepting, let in-flight answers finish (up to FMSTACK_DRAIN_TIMEOUT), then commit every trace
    uvicorn.run(
        application, host=host, port=port, log_level="warning", timeout_graceful_shutdown=settings.drain_timeout
    )


models_app = command_group(
    "List, convert, export, quantize and compare models.\n\nExample: fmstack models", invoke_without_command=True
)
app.add_typer(models_app, name="models")
app.add_typer(models_app, name="model", hidden=True)  # `fmstack model export ...` reads naturally too
models_app.command("quantize")(models_quantize)
models_app.command("compare")(models_compare)


MODEL_COLUMNS = (
    Col("name", lambda m: m.name, no_wrap=True),
    Col("engine", lambda m: m.engine),
    Col("kind", lambda m: m.kind),
    Col("source", lambda m: m.source),
    Col("context", lambda m: str(m.context_length)),
    Col("available", lambda m: "yes" if m.available else "[red]no[/]"),
    Col("size", lambda m: f"{m.size_bytes / 1e6:,.0f} MB" if m.size_bytes else "-"),
)


@models_app.callback()
def models(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List every model: engine, source, availability and size.

    Example: fmstack models --json
    """
    if ctx.invoked_subcommand:
        return
    from fmstack.core.registry import Registry

    show_rows(Registry(get_settings()).describe(), MODEL_COLUMNS, as_json)


@models_app.command("convert")
def models_convert(
    model: str = typer.Argument(..., help="A llamacpp (GGUF) model from the registry."),
    name: str = typer.Option(..., "--name", help="Name for the converted model."),
) -> None:
    """Convert a GGUF model to a Hugging Face checkpoint and register it on the transformers engine.

    Example: fmstack models convert smollm2-135m-instruct --name smollm2-hf
    """
    from fmstack.core.registry import Registry, register_user_model
    from fmstack.model.convert import gguf_to_hf

    settings = get_settings()
    spec = Registry(settings).get(model)
    if spec.engine != "llamacpp":
        raise FmstackError(f"'{model}' runs on {spec.engine}; only GGUF (llamacpp) models convert.")
    with preparing(model) as progress:
        gguf = spec.local_path(settings, progress)
    with console.status(f"converting {model} to a Hugging Face checkpoint"):
        out = gguf_to_hf(gguf, settings.models_dir / name)
    register_user_model(
        settings,
        name,
        engine="transformers",
        source=f"path:{out}",
        context_length=spec.context_length,
        description=f"{model} converted from GGUF",
    )
    console.print(f"converted to {out}; registered as [cyan]{name}[/] (engine transformers)")


@models_app.command("export")
def models_export(
    checkpoint: Path = typer.Argument(
        ..., help="A Hugging Face LlamaForCausalLM folder (config.json, safetensors, tokenizer.json)."
    ),
    fmt: str = typer.Option("gguf", "--format", help="Output format; only gguf."),
    quant: str = typer.Option("f16", "--quant", help="f32, f16, q8_0 or q4_k_m (the last two by llama.cpp)."),
    name: str = typer.Option(..., "--name", help="Registry name to serve the GGUF under."),
    out: Path = typer.Option(None, "--out", help="GGUF file to write (default: MODELS_DIR/NAME.QUANT.gguf)."),
) -> None:
    """Export a Hugging Face checkpoint to a GGUF file (tokenizer and chat template included) and register it on the
    llamacpp engine, so `fmstack up --model NAME` and the OpenAI API serve it at once.

    Example: fmstack model export runs/tiny --format gguf --quant q8_0 --name tiny-q8
    """
    from fmstack.core.registry import register_user_model
    from fmstack.model.export.gguf import check_name, check_quant, export_gguf

    settings = get_settings()
    if fmt != "gguf":
        raise FmstackError(f"--format {fmt!r} is not supported; use gguf.")
    check_name(name)
    check_quant(quant)
    target = (out or settings.models_dir / f"{name}.{quant}.gguf").expanduser().resolve()
    with _export_progress() as progress:
        result = export_gguf(checkpoint, target, quant, name, progress)
    register_user_model(
        settings,
        name,
        engine="llamacpp",
        source=f"path:{result.path}",
        context_length=result.context_length,
        description=f"{checkpoint.name} exported to GGUF {quant}",
    )
    types = ", ".join(f"{n} {t}" for t, n in sorted(result.tensor_types.items(), key=lambda kv: -kv[1]))
    console.print(f"wrote {result.path} ({result.size_bytes / 1e6:,.1f} MB; tensors: {types})", soft_wrap=True)
    if result.fallback_tensors:
        console.print(
            f"note: {result.fallback_tensors} tensors have rows that are not a multiple of 256, so llama.cpp "
            "stored them in a non-k-quant type instead of q4_K/q6_K.",
            soft_wrap=True,
        )
    console.print(f"registered as [cyan]{name}[/] (engine llamacpp); serve it with: fmstack up --model {name}")


@contextmanager
def _export_progress() -> Iterator[Callable[[str, int, int], None]]:
    """Bytes written per tensor, then a spinner while llama.cpp quantizes (it reports no progress). Shown from the
    first update only, so an input error stays a single line."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=True)
    task = bar.add_task("exporting", total=None)

    def update(stage: str, done: int, total: int) -> None:
        bar.start()
        bar.update(task, description=stage, completed=done, total=total or None)

    try:
        yield update
    finally:
        bar.stop()


@app.command()
def chat(
    model: str = typer.Option(None, "--model", "-m", help="Model to chat with."),
    system: str = typer.Option(None, "--system", "-s", help="System prompt."),
    url: str = typer.Option(
        None,
        "--url",
        help="Talk to a running fmstack (or any OpenAI-compatible) server "
        "instead of loading the model in this process, e.g. http://127.0.0.1:8000/v1",
    ),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Longest answer, in tokens (default: no cap)."),
) -> None:
    """Chat in the terminal, streaming. Commands: /model NAME, /system TEXT, /reset, /quit.

    Example: fmstack chat --model smollm2-135m-instruct --system "Answer briefly."
    """
    from fmstack.cli.chat import run_chat

    settings = get_settings()
    run_chat(console, settings, model or settings.default_model, system, url, max_tokens)


def _ms(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


TRACE_COLUMNS = (  # over `trace_dict` rows: the table and --json read the same data
    Col("id", lambda t: t["id"], no_wrap=True),
    Col("time", lambda t: t["created_at"][:19].replace("T", " ")),
    Col("model", lambda t: t["model"] or "-"),
    Col("prompt", lambda t: f"{t['prompt_name']}@{t['prompt_version']}" if t["prompt_name"] else "-"),
    Col("status", lambda t: t["status"]),
    Col("tokens in/out", lambda t: f"{t['prompt_tokens']}/{t['completion_tokens']}"),
    Col("ttft ms", lambda t: _ms(t["ttft_ms"])),
    Col("latency ms", lambda t: _ms(t["latency_ms"])),
    Col("cost $", lambda t: f"{t['cost']:.6f}"),
    Col("fb", lambda t: f"{sum(f['rating'] or 0 for f in t['feedback']):+d}" if t["feedback"] else ""),
)


@traces_app.command("list")
def traces_list(
    limit: int = typer.Option(20, help="How many, newest first."),
    model: str = typer.Option(None, help="Only this model."),
    app_name: str = typer.Option(None, "--app", help="Only this app (the X-Fmstack-App header)."),
    status: str = typer.Option(None, help="ok, error or cancelled."),
    prompt: str = typer.Option(
        None, help="Only calls through this stored prompt: NAME (all versions), NAME@3, NAME@ALIAS."
    ),
    as_json: bool = JSON,
) -> None:
    """List recent requests with latency, tokens, cost and feedback.

    Example: fmstack traces list --limit 20 --status error --prompt capitals@production
    """
    from fmstack.app.prompts import PromptStore
    from fmstack.core.store.traces import list_traces, trace_dict

    sessions = store()
    prompt_name, prompt_version = PromptStore(sessions).trace_filter(prompt)
    with sessions() as session:
        found = list_traces(
            session,
            limit=limit,
            model=model,
            app=app_name,
            status=status,
            prompt_name=prompt_name,
            prompt_version=prompt_version,
        )
        rows = [trace_dict(t) for t in found]
    show_rows(rows, TRACE_COLUMNS, as_json)


@traces_app.command("show")
def traces_show(
    trace_id: str = typer.Argument(..., help="The trace id (the completion's `id`)."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON, not highlighted (for scripts)."),
) -> None:
    """Show one trace as JSON, with its feedback.

    Example: fmstack traces show chatcmpl-0123abcd...
    """
    from fmstack.core.store.traces import get_trace, trace_dict

    with store()() as session:
        trace = trace_dict(get_trace(session, trace_id))
    if as_json:
        print_json(trace)
    else:
        console.print_json(json.dumps(trace, default=str))


@traces_app.command("export")
def traces_export(
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    fmt: str = typer.Option("jsonl", "--format", help="Only jsonl for now."),
    model: str = typer.Option(None, help="Only this model."),
    app_name: str = typer.Option(None, "--app", help="Only this app."),
    prompt: str = typer.Option(None, help="Only calls through this stored prompt: NAME, NAME@3, NAME@ALIAS."),
) -> None:
    """Export traces with their feedback, one JSON object per line.

    Example: fmstack traces export --format jsonl -o traces.jsonl
    """
    from fmstack.app.prompts import PromptStore
    from fmstack.core.store.traces import iter_traces, trace_dict

    if fmt != "jsonl":
        raise FmstackError(f"--format {fmt!r} is not supported; use jsonl.")
    sessions = store()
    prompt_name, prompt_version = PromptStore(sessions).trace_filter(prompt)
    out = output.open("w") if output else sys.stdout
    count = 0
    with sessions() as session:
        by_prompt = {"prompt_name": prompt_name, "prompt_version": prompt_version}
        for trace in iter_traces(session, model=model, app=app_name, **by_prompt):
            out.write(json.dumps(trace_dict(trace), default=str, ensure_ascii=False) + "\n")
            count += 1
    if output:
        out.close()
        err.print(f"wrote {count} traces to {output}")
