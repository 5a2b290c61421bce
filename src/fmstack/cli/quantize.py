"""`fmstack model quantize` and `fmstack model compare`: make the variants of a model, then measure what each one
costs and loses on your task. Registered on the `models` group by `fmstack.cli`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from fmstack.cli.common import JSON, Col, console, print_json, show_rows
from fmstack.core.config import get_settings

QUANT_HELP = "Comma-separated llama.cpp types, e.g. q8_0,q6_k,q5_k_m,q4_k_m,q3_k_m,q2_k."


def quantize(
    source: str = typer.Argument(..., help="A registry model (GGUF or Hugging Face), a GGUF file or an HF folder."),
    quant: str = typer.Option(..., "--quant", help=QUANT_HELP),
    name: str = typer.Option(None, "--name", help="Register the variants as NAME-QUANT (default: the source's name)."),
    imatrix: Path = typer.Option(None, "--imatrix", help="Calibration text: quantize with an importance matrix."),
    allow_requantize: bool = typer.Option(
        False, "--allow-requantize", help="Quantize a GGUF that is already quantized (the errors compound)."
    ),
    as_json: bool = JSON,
) -> None:
    """Quantize a model to several llama.cpp types, each registered as NAME-QUANT on the llamacpp engine.

    A Hugging Face checkpoint is exported to f16 first (registered as NAME-f16: the reference for `model
    compare`). Tensors whose rows are not a multiple of 256 cannot take a k-quant; the command lists them.

    Example: fmstack model quantize smollm2-hf --quant q8_0,q6_k,q5_k_m,q4_k_m,q3_k_m,q2_k
    """
    from fmstack.core.registry import register_user_model
    from fmstack.model.export.quantize import check_plan, parse_quants, quantize_model, resolve_source

    quants = parse_quants(quant)
    settings = get_settings()
    src = resolve_source(source, settings, name)
    check_plan(src, quants, allow_requantize, imatrix)

    def register(variant, context: int) -> None:
        how = " with an importance matrix" if variant.imatrix else ""
        register_user_model(settings, variant.name, engine="llamacpp", source=f"path:{variant.path}",
                            context_length=context, description=f"{source} as GGUF {variant.quant}{how}")  # fmt: skip

    with console.status(f"quantizing {source}") as status:
        result = quantize_model(src, quants, settings, register, allow_requantize=allow_requantize,
                                calibration=imatrix, progress=lambda stage, done, total: status.update(
                                    f"{stage} {done}/{total}" if total else stage))  # fmt: skip
    if as_json:
        print_json(result)
        return
    show_rows(result.variants, VARIANT_COLUMNS, False)
    console.print(f"files in {result.variants[0].path.parent}/", soft_wrap=True)
    _print_notes(result)


VARIANT_COLUMNS = (
    Col("registered as", lambda v: v.name, no_wrap=True),
    Col("size MB", lambda v: f"{v.size_bytes / 1e6:,.1f}"),
    Col("tensors", lambda v: ", ".join(f"{n} {t}" for t, n in sorted(v.tensor_types.items(), key=lambda kv: -kv[1]))),
    Col("k-quant fallbacks", lambda v: str(len(v.fallbacks)) if v.fallbacks else "-"),
)


def _print_notes(result) -> None:
    if result.imatrix:
        i = result.imatrix
        console.print(f"importance matrix: {i['tokens']:,} tokens of {i['text']} in {i['chunks']} chunks, "
                      f"{i['tensors']} tensors", soft_wrap=True)  # fmt: skip
    for v in result.variants:
        if v.fallbacks:
            kinds = sorted({t for t in v.fallbacks.values()})
            console.print(
                f"note: {v.name}: {len(v.fallbacks)} tensors have rows that are not a multiple of 256, so llama.cpp "
                f"stored them as {', '.join(kinds)} instead of a k-quant (e.g. {next(iter(v.fallbacks))}).",
                soft_wrap=True,
            )
    console.print("compare them with: fmstack model compare " + " ".join(v.name for v in result.variants)
                  + " --suite SUITE.yaml --text HELD_OUT.txt", soft_wrap=True)  # fmt: skip


def compare(
    models: list[str] = typer.Argument(..., help="Two or more registered GGUF models, e.g. variants of one model."),
    suite_path: Path = typer.Option(..., "--suite", help="Eval suite YAML: the task score."),
    text: Path = typer.Option(None, "--text", help="Held-out plain text: perplexity, KL and top-1 agreement."),
    metric: str = typer.Option(None, "--metric", help="The suite metric that is the task score (default: its first)."),
    out: Path = typer.Option(Path("model-compare"), "--out", help="Folder for compare.json, .html and .png."),
    text_tokens: int = typer.Option(1024, "--text-tokens", min=16, help="Held-out tokens to score at most."),
    streams: int = typer.Option(8, "--streams", min=1, help="Concurrent requests for the batched tokens/s."),
    reference: str = typer.Option(None, "--reference", help="The variant to compare with (default: most bits/w)."),
    price: float = typer.Option(None, "--price-per-hour", min=0, help="USD per machine hour: cost of 1k requests."),
    as_json: bool = JSON,
) -> None:
    """Measure model variants side by side: size, load time, peak memory, prefill and decode tokens/s, perplexity,
    KL divergence and top-1 agreement with the highest-precision variant, and the task score on a suite with its
    95 % CI and paired difference to that reference; the verdict is the smallest variant not significantly worse.

    Each variant is measured alone in its own process; then the suite runs on all of them.

    Example: fmstack model compare sm-f16 sm-q8_0 sm-q4_k_m --suite examples/eval/capitals.yaml --text held_out.txt
    """
    from fmstack.app.eval import quality
    from fmstack.app.eval.runner import Runner
    from fmstack.app.eval.suite import load_suite
    from fmstack.cli.eval import Workspace
    from fmstack.model.export.measure import measure_variants

    ws = Workspace()
    try:
        suite = load_suite(suite_path, ws.sessions)
        label, higher = quality.pick_metric(suite, metric)
        with console.status("measuring") as status:
            names = list(dict.fromkeys(models))
            measured = measure_variants(
                names, ws.settings, text, text_tokens=text_tokens, streams=streams, reference=reference,
                progress=lambda name: status.update(f"measuring {name} in a process of its own"),
            )  # fmt: skip
            status.update(f"running {suite.name} on {len(measured)} variants")
            runner = Runner(ws.sessions, ws.generator(None, ""), ws.embed)
            run = asyncio.run(quality.run_suite(runner, suite, [m.name for m in measured]))
    finally:
        ws.close()
    report = quality.build_report(suite.name, run, [vars(m) for m in measured], label, higher, price)
    paths = quality.write_report(report, out)
    if as_json:
        print_json(report)
        return
    for columns in (quality.COST_COLUMNS, quality.QUALITY_COLUMNS):
        show_rows(report.variants, [Col(h, cell, no_wrap=h == "variant") for h, cell in columns], False)
    console.print(f"[bold]verdict: {report.verdict or 'none'}[/] — {report.verdict_reason}.", soft_wrap=True)
    console.print(quality.noise_note(report), soft_wrap=True)
    for v in report.variants:
        if v.task.errors:
            console.print(f"[yellow]{v.name}: {v.task.errors} cases have no {label} score[/] (fmstack eval show "
                          f"{report.eval_run})", soft_wrap=True)  # fmt: skip
    console.print(f"wrote {paths['html']}, {paths['json']} and {paths['plot']} (eval run {report.eval_run})",
                  soft_wrap=True)  # fmt: skip
