"""`fmstack data …`: run a pipeline file, or one step of it (clean, dedup, tokenize, stats) from flags.

Exit codes: 0 when every input record was read, 1 when some were rejected (listed in OUT/rejected.txt; the run
still finished), 2 for a mistake to fix (a bad pipeline file, a missing input, a rejection under --strict).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from fmstack.cli.common import command_group, console, err, store
from fmstack.core.errors import FmstackError

# Cleaning rules for `stats`: every edit and filter off, language identification on (for the language mix).
OBSERVE_ONLY: dict[str, Any] = {
    **dict.fromkeys(("normalize", "strip_html", "strip_control", "boilerplate", "collapse_whitespace", "pii"), False),
    **dict.fromkeys(
        (
            "min_words",
            "max_words",
            "min_mean_word_length",
            "max_mean_word_length",
            "max_symbol_word_ratio",
            "min_alpha_word_fraction",
            "max_duplicate_line_fraction",
            "max_top_ngram_fraction",
            "max_bullet_line_fraction",
            "max_ellipsis_line_fraction",
            "min_stopwords",
        )
    ),
    "detect_language": True,
}

data_app = command_group(
    "Clean, deduplicate and tokenize text and image datasets.\n\nExample: fmstack data run pipeline.yaml",
    no_args_is_help=True,
)

ENGINE = typer.Option("local", "--engine", help="local (every core of this machine) or ray.")
WORKERS = typer.Option(None, "--workers", "-j", help="Parallel shards (default: one per core).")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster to use with --engine ray (default: start one).")
STRICT = typer.Option(False, "--strict", help="Stop at the first unreadable record instead of counting it.")
FORCE = typer.Option(False, "--force", help="Delete what OUT holds and start over.")
FORMAT = typer.Option("parquet", "--format", help="Output format: parquet or jsonl.")
TEXT_FIELD = typer.Option("text", "--text-field", help="Field that holds the text (JSONL, Parquet, CSV).")
ID_FIELD = typer.Option(None, "--id-field", help="Field that holds a document id (default: file:line).")


@contextmanager
def _progress() -> Iterator[Any]:
    """One bar per stage; stages without a known size spin."""
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress("[progress.description]{task.description}", *columns, console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _run(spec: Any, force: bool = False) -> None:
    from fmstack.model.data.pipeline import run_pipeline
    from fmstack.model.data.report import write_report

    with _progress() as update:
        result = run_pipeline(spec, update, force=force)
    report = write_report(result.out, result.timings)
    _summary(result, report)
    if result.rejected:
        err.print(
            f"{len(result.rejected)} input record(s) rejected, for example {result.rejected[0]}; "
            f"all are listed in {result.out / 'rejected.txt'}. Fix them, or use --strict to stop at the first.",
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _summary(result: Any, report: Path) -> None:
    m = result.manifest
    c = m["counts"]
    table = Table("documents", "count", title=f"{result.out}")
    for label, key in (
        ("read", "read"),
        ("rejected", "rejected"),
        ("after cleaning", "after_clean"),
        ("after dedup", "after_dedup"),
    ):
        table.add_row(label, f"{c[key]:,}")
    for rule, n in m["clean"]["dropped"].items():
        table.add_row(f"  dropped by {rule}", f"{n:,}")
    if m.get("dedup"):
        table.add_row("  exact duplicates", f"{m['dedup']['exact_removed']:,}")
        table.add_row("  near duplicates", f"{m['dedup']['near_removed']:,}")
    if m.get("tokenize"):
        s = m["tokenize"]["stats"]
        table.add_row("tokens", f"{s.get('tokens', 0):,}")
    console.print(table)
    took = result.timings.get("total")
    console.print(
        f"report: {report}" + (f"  ({took:.1f} s)" if took else "  (already complete: nothing to do)"), soft_wrap=True
    )


def _spec(data: dict[str, Any]) -> Any:
    from fmstack.model.data.spec import PipelineError, PipelineSpec

    try:
        return PipelineSpec.model_validate(data)
    except ValueError as exc:
        raise PipelineError(f"invalid option: {exc}") from None


def _base(
    inputs: list[Path],
    out: Path,
    fmt: str,
    text_field: str,
    id_field: str | None,
    engine: str,
    workers: int | None,
    ray_address: str | None,
    strict: bool,
) -> dict[str, Any]:
    return {
        "input": {"paths": [str(p) for p in inputs], "text_field": text_field, "id_field": id_field},
        "output": {"path": str(out), "format": fmt},
        "engine": engine,
        "workers": workers,
        "ray_address": ray_address,
        "strict": strict,
    }


@data_app.command()
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
    engine: str = typer.Option(None, "--engine", help="Override the file's engine: local or ray."),
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    strict: bool = STRICT,
    force: bool = FORCE,
) -> None:
    """Run a pipeline file: clean → dedup → tokenize, resumable (run it again after a crash to continue).

    Example: fmstack data run examples/data/pipeline.yaml --engine ray
    """
    from fmstack.model.data.spec import load_pipeline

    spec = load_pipeline(pipeline)
    spec.engine = engine or spec.engine
    spec.workers = workers or spec.workers
    spec.ray_address = ray_address or spec.ray_address
    spec.strict = strict or spec.strict
    _run(spec, force)


@data_app.command()
def clean(
    inputs: list[Path] = typer.Argument(..., help="Files or folders: JSONL, Parquet, CSV, text, saved datasets."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file of cleaning rules (see CleanConfig)."),
    languages: list[str] = typer.Option(None, "--lang", help="Keep only these languages (repeat: --lang en)."),
    pii: bool = typer.Option(None, "--pii/--no-pii", help="Redact emails, phones, IPs and card numbers."),
    fmt: str = FORMAT,
    text_field: str = TEXT_FIELD,
    id_field: str = ID_FIELD,
    engine: str = ENGINE,
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    strict: bool = STRICT,
    force: bool = FORCE,
) -> None:
    """Clean documents: normalize Unicode, strip HTML and boilerplate, apply quality filters, redact PII.

    Example: fmstack data clean raw.jsonl -o cleaned/ --lang en --pii
    """
    rules = _yaml_rules(config) if config else {}
    if languages:
        rules["languages"] = languages
    if pii is not None:
        rules["pii"] = pii
    _run(
        _spec({**_base(inputs, out, fmt, text_field, id_field, engine, workers, ray_address, strict), "clean": rules}),
        force,
    )


def _yaml_rules(path: Path) -> dict[str, Any]:
    from fmstack.core.yamlfile import read_yaml
    from fmstack.model.data.spec import PipelineError

    data, _ = read_yaml(path, "cleaning rules", PipelineError)
    if not isinstance(data, dict):
        raise PipelineError(f"{path}:1: cleaning rules are a mapping of rule: value.")
    return data


@data_app.command()
def dedup(
    inputs: list[Path] = typer.Argument(..., help="Files or folders; an image folder with --images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    threshold: float = typer.Option(0.8, help="Jaccard similarity (text) at which documents are duplicates."),
    ngram: int = typer.Option(5, help="Words per shingle."),
    num_perm: int = typer.Option(128, help="MinHash permutations."),
    near: bool = typer.Option(True, "--near/--exact-only", help="Near duplicates (MinHash LSH) as well as exact."),
    images: bool = typer.Option(False, "--images", help="Inputs are image folders: exact + perceptual hashes."),
    max_distance: int = typer.Option(None, "--max-distance", help="Images: Hamming distance for near duplicates."),
    fmt: str = FORMAT,
    text_field: str = TEXT_FIELD,
    id_field: str = ID_FIELD,
    engine: str = ENGINE,
    workers: int = WORKERS,
    ray_address: str = RAY_ADDRESS,
    strict: bool = STRICT,
    force: bool = FORCE,
) -> None:
    """Remove exact and near-duplicate documents (or images), keeping the first of each cluster.

    Example: fmstack data dedup corpus.jsonl -o deduped/ --threshold 0.8
    """
    if images:
        _dedup_images(inputs, out, max_distance, workers)
        return
    step = {"near": near, "ngram": ngram, "num_perm": num_perm, "threshold": threshold}
    _run(
        _spec({**_base(inputs, out, fmt, text_field, id_field, engine, workers, ray_address, strict), "dedup": step}),
        force,
    )


def _dedup_images(inputs: list[Path], out: Path, max_distance: int | None, workers: int | None) -> None:
    from fmstack.model.data.images import dedup_images

    if len(inputs) != 1 or not inputs[0].is_dir():
        raise FmstackError("--images takes one image folder.")
    kwargs: dict[str, Any] = (
        {} if max_distance is None else {"phash_threshold": max_distance, "dhash_threshold": max_distance}
    )
    # Both hashes must agree, and an image joins only a kept image (no chains): perceptual hashes ignore
    # colour, and single linkage merged 3,941 of easy-vqa's 4,000 distinct pictures into chains.
    result = dedup_images(inputs[0], out, method="both", linkage="kept", workers=workers or 1, **kwargs)
    stats = result.stats
    table = Table("images", "count", title=str(out))
    table.add_row("read", f"{stats.seen:,}")
    table.add_row("kept", f"{stats.kept:,}")
    for rule, n in stats.dropped.items():
        table.add_row(f"  {rule}", f"{n:,}")
    console.print(table)
    console.print(f"kept images in {out / 'images.jsonl'}, clusters in {out / 'clusters.jsonl'}", soft_wrap=True)
    if result.rejected:
        err.print(
            f"{len(result.rejected)} image(s) unreadable, for example {result.rejected[0]}; all are listed in "
            f"{out / 'rejected.jsonl'}.",
            soft_wrap=True,
        )
        raise typer.Exit(1)


@data_app.command()
def tokenize(
    inputs: list[Path] = typer.Argument(..., help="Files or folders of documents."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    tokenizer: str = typer.Option(None, "--tokenizer", "-t", help="Registry model, tokenizer dir or file, GGUF."),
    train_vocab: int = typer.Option(None, "--train-vocab", help="Train a byte-level BPE with this vocabulary."),
    block_size: int = typer.Option(None, "--block-size", help="Pack into blocks of this many tokens (BOS/EOS)."),
    pack_format: str = typer.Option("npy", "--pack-format", help="Blocks as npy (memmap) or parquet."),
    fmt: str = FORMAT,
    text_field: str = TEXT_FIELD,
    id_field: str = ID_FIELD,
    strict: bool = STRICT,
    force: bool = FORCE,
) -> None:
    """Tokenize documents: token statistics, and optionally packed training blocks.

    Example: fmstack data tokenize cleaned/data -o tokens/ --train-vocab 8000 --block-size 256
    """
    step: dict[str, Any] = {"tokenizer": tokenizer}
    if train_vocab:
        step["train"] = {"vocab_size": train_vocab}
    if block_size:
        step["pack"] = {"block_size": block_size, "format": pack_format}
    if (tokenizer is None) == (train_vocab is None):
        raise FmstackError("give --tokenizer (an existing tokenizer) or --train-vocab N (train one), not both.")
    _run(_spec({**_base(inputs, out, fmt, text_field, id_field, "local", None, None, strict), "tokenize": step}), force)


@data_app.command()
def stats(
    inputs: list[Path] = typer.Argument(..., help="Files or folders of documents."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the report and manifest."),
    tokenizer: str = typer.Option(None, "--tokenizer", "-t", help="Also count tokens with this tokenizer."),
    text_field: str = TEXT_FIELD,
    id_field: str = ID_FIELD,
    force: bool = FORCE,
) -> None:
    """Report on a dataset without changing it: counts, lengths, languages, tokens (report.html).

    Example: fmstack data stats corpus.jsonl -o stats/ --tokenizer smollm2-135m-instruct
    """
    data = _base(inputs, out, "parquet", text_field, id_field, "local", None, None, False)
    data["output"]["data"] = False
    data["clean"] = OBSERVE_ONLY
    if tokenizer:
        data["tokenize"] = {"tokenizer": tokenizer}
    _run(_spec(data), force)


@data_app.command("from-traces")
def from_traces(
    fmt: str = typer.Option(..., "--format", help="sft (messages + the answer to learn) or dpo (chosen/rejected)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file to write."),
    app_name: str = typer.Option(None, "--app", help="Only traces of this app (the X-Fmstack-App header)."),
    model: str = typer.Option(None, "--model", help="Only traces answered by this model."),
    since: str = typer.Option(
        None, "--since", help="Only traces since this ISO time (UTC unless zoned), e.g. 2026-11-01."
    ),
    min_rating: int = typer.Option(
        1, "--min-rating", help="Net thumbs (up minus down) an answer needs to count as liked."
    ),
) -> None:
    """Turn stored traces and their feedback into training data for `fmstack train finetune` or `dpo`.

    SFT: answers rated at least --min-rating, and corrected answers (the correction replaces the model's). DPO: a
    correction over the original answer, and per identical request a liked answer over a disliked one.

    Example: fmstack data from-traces --format dpo --app shop-bot --since 2026-11-01 --out prefs.jsonl
    """
    from datetime import datetime

    from fmstack.model.data.from_traces import export_traces

    try:
        when = datetime.fromisoformat(since) if since else None
    except ValueError as exc:
        raise FmstackError(
            f"--since {since!r}: {exc}; use an ISO time such as 2026-11-01 or 2026-11-01T09:30."
        ) from None
    result = export_traces(store(), fmt, out, app=app_name, model=model, since=when, min_rating=min_rating)
    table = Table("records", "count", title=f"{out} ({fmt})")
    for kind, n in sorted(result.counts.items()):
        table.add_row(kind, f"{n:,}")
    table.add_row("[bold]written[/]", f"[bold]{len(result.records):,}[/]")
    for reason, n in sorted(result.skipped.items()):
        table.add_row(f"[dim]skipped: {reason}[/]", f"[dim]{n:,}[/]")
    console.print(table)
