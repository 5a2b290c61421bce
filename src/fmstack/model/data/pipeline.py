"""Running a data pipeline: plan shards, clean them in parallel (stage A), deduplicate globally (stage B), write
the survivors in parallel (stage C), tokenize (stage D), then the manifest and the report.

Intermediate files live in `OUTPUT/.work`, keyed by the pipeline's fingerprint. A run killed at any point is
resumed by running the same command again: finished shards are skipped (their markers exist), unfinished ones are
redone from their start, so no document is lost or doubled. The outputs depend only on the input and the config —
not on the engine, the number of workers or the order shards finish in — so two runs are byte-identical.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from fmstack.model.data.documents import StepStats
from fmstack.model.data.executors import run_jobs
from fmstack.model.data.readers import Shard, plan_shards
from fmstack.model.data.spec import PipelineError, PipelineSpec
from fmstack.model.data.stages import atomic_write_bytes, clean_shard, read_docs, write_json, write_shard

Progress = Callable[[str, int, int | None], None]


def _quiet(stage: str, done: int, total: int | None) -> None:
    return None


@dataclass
class RunResult:
    """What a run did; `rejected` decides the exit code."""

    out: Path
    manifest: dict[str, Any]
    rejected: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def run_pipeline(spec: PipelineSpec, progress: Progress = _quiet, force: bool = False) -> RunResult:
    """Run (or resume) the pipeline; returns the manifest. Raises PipelineError for a strict-mode rejection or an
    output folder that holds a different pipeline's work."""
    out = Path(spec.output.path)
    if done := _finished(out, spec, force):
        return done
    work = _work_dir(out, spec, force)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    root = _common_root([Path(p) for p in spec.input.paths])
    shards = plan_shards([Path(p) for p in spec.input.paths], int(spec.input.shard_mb * (1 << 20)))
    timings["plan"] = time.perf_counter() - t0
    a = _stage_a(spec, shards, work, root, progress)
    timings["clean"] = time.perf_counter() - t0 - timings["plan"]
    t1 = time.perf_counter()
    dedup = _stage_b(spec, shards, work, out, progress) if spec.dedup else None
    timings["dedup"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    parts = (
        _stage_c(spec, shards, a, work, out, progress)
        if spec.output.data
        else [{"file": f".work/a/{s.name}.parquet", "kept": r["kept"]} for s, r in zip(shards, a, strict=True)]
    )
    timings["write"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    tokenized = _stage_d(spec, out, parts, progress) if spec.tokenize else None
    timings["tokenize"] = time.perf_counter() - t1
    rejected = [r for res in a for r in res["rejected"]]
    _write_rejected(out, rejected)
    manifest = _manifest(spec, root, a, dedup, parts, tokenized, rejected, out)
    write_json(out / "manifest.json", manifest)
    _write_report_data(work, out, a, dedup)
    shutil.rmtree(work)
    timings["total"] = time.perf_counter() - t0
    return RunResult(out, manifest, rejected, timings)


def _finished(out: Path, spec: PipelineSpec, force: bool) -> RunResult | None:
    """A completed run of this same pipeline: running it again changes nothing, so it does nothing."""
    manifest_path = out / "manifest.json"
    if force or (out / ".work").exists() or not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("fingerprint") != spec.fingerprint():
        return None
    rejected = (out / "rejected.txt").read_text().splitlines() if (out / "rejected.txt").exists() else []
    return RunResult(out, manifest, rejected, {"total": 0.0})


def _work_dir(out: Path, spec: PipelineSpec, force: bool) -> Path:
    """`.work` for this pipeline; another pipeline's unfinished work is not silently mixed in."""
    work = out / ".work"
    stamp = work / "pipeline.json"
    fingerprint = spec.fingerprint()
    if force and out.exists():
        shutil.rmtree(out)
    if stamp.exists() and json.loads(stamp.read_text())["fingerprint"] != fingerprint:
        raise PipelineError(
            f"{out} holds an unfinished run of a different pipeline; use another output folder, "
            "or --force to start over there."
        )
    if not stamp.exists() and (out / "manifest.json").exists():
        old = json.loads((out / "manifest.json").read_text())
        if old.get("fingerprint") != fingerprint:
            raise PipelineError(
                f"{out} holds the output of a different pipeline; use another output folder, or --force to replace it."
            )
    for sub in ("a", "c"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    write_json(stamp, {"fingerprint": fingerprint})
    return work


def _common_root(paths: list[Path]) -> Path:
    """Sources are named relative to this folder, so names (and so outputs) do not depend on where data lives."""
    resolved = [p.resolve() for p in paths]
    parents = [p if p.is_dir() else p.parent for p in resolved]
    common = Path(*Path(parents[0]).parts)
    for p in parents[1:]:
        while not p.is_relative_to(common):
            common = common.parent
    return common


def _gather(
    fn: Any, jobs: list[dict[str, Any]], spec: PipelineSpec, stage: str, progress: Progress, key: str
) -> list[dict[str, Any]]:
    results = []
    progress(stage, 0, len(jobs))
    for res in run_jobs(fn, jobs, spec.engine, spec.workers, spec.ray_address):
        if "strict_error" in res:
            raise PipelineError(f"rejected (--strict stops at the first): {res['strict_error']}")
        results.append(res)
        progress(stage, len(results), len(jobs))
    return sorted(results, key=lambda r: r[key])


def _stage_a(
    spec: PipelineSpec, shards: list[Shard], work: Path, root: Path, progress: Progress
) -> list[dict[str, Any]]:
    clean = json.dumps(spec.clean, sort_keys=True) if spec.clean is not None else None
    dedup = spec.dedup.model_dump() if spec.dedup else None
    jobs = [
        {
            "shard": s.to_dict(),
            "work": str(work),
            "root": str(root),
            "clean": clean,
            "dedup": dedup,
            "text_field": spec.input.text_field,
            "id_field": spec.input.id_field,
            "strict": spec.strict,
        }
        for s in shards
    ]
    return _gather(clean_shard, jobs, spec, "clean", progress, "shard")


def _stage_b(spec: PipelineSpec, shards: list[Shard], work: Path, out: Path, progress: Progress) -> dict[str, Any]:
    """The one global step. Its result (the mask of removed documents) is saved, so a resumed run skips it."""
    from fmstack.model.data.dedup import ShardedSignatures, cluster
    from fmstack.model.data.minhash import verified_params

    marker = work / "dedup.json"
    if marker.exists():
        return json.loads(marker.read_text())
    assert spec.dedup is not None
    progress("dedup", 0, None)
    a = work / "a"
    exact = np.concatenate([np.load(a / f"{s.name}.npz")["exact"] for s in shards] or [np.zeros(0, np.uint64)])
    if not spec.dedup.exact:
        exact = np.arange(len(exact), dtype=np.uint64)  # all distinct: exact matching off
    params = verified_params(spec.dedup.threshold, spec.dedup.num_perm) if spec.dedup.near else None
    if params is not None and len(exact):
        bands = [np.load(a / f"{s.name}.bands.npy", mmap_mode="r") for s in shards]
        columns = (np.concatenate([b[:, j] for b in bands]) for j in range(params.bands))
        sigs = ShardedSignatures([a / f"{s.name}.sigs.npy" for s in shards])
        result = cluster(exact, columns, sigs, spec.dedup.threshold)
    else:
        result = cluster(exact, [], None, spec.dedup.threshold)
    np.save(work / ".removed.npy", result.removed)
    (work / ".removed.npy").replace(work / "removed.npy")
    _write_clusters(out, work, shards, result)
    summary = {
        "documents": int(len(exact)),
        "exact_removed": result.exact_removed,
        "near_removed": result.near_removed,
        "clusters": len(result.clusters),
        "bands": params.bands if params else None,
        "rows": params.rows if params else None,
        "cluster_sizes": dict(sorted(Counter(len(c.members) + 1 for c in result.clusters).items())),
    }
    write_json(marker, summary)
    progress("dedup", 1, 1)
    return summary


def _write_clusters(out: Path, work: Path, shards: list[Shard], result: Any) -> None:
    """One line per cluster: the kept document and each removed one, with how it matched — for a person to check."""
    wanted = np.unique(np.array([i for c in result.clusters for i in (c.kept, *(m.index for m in c.members))], int))
    where: dict[int, dict[str, Any]] = {}
    start = 0
    for s in shards:
        table = pq.read_table(work / "a" / f"{s.name}.parquet", columns=["id", "source", "line", "text"])
        mine = wanted[(wanted >= start) & (wanted < start + table.num_rows)]
        for i, row in zip(mine.tolist(), table.take(mine - start).to_pylist(), strict=True):
            where[i] = {"id": row["id"], "source": row["source"], "line": row["line"], "snippet": row["text"][:160]}
        start += table.num_rows
    lines = []
    for k, c in enumerate(result.clusters):
        removed = [{**where[m.index], "kind": m.kind, "similarity": round(m.similarity, 3)} for m in c.members]
        lines.append(json.dumps({"cluster": k, "kept": where[c.kept], "removed": removed}, ensure_ascii=False))
    atomic_write_bytes(out / "clusters.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())


def _stage_c(
    spec: PipelineSpec, shards: list[Shard], a: list[dict[str, Any]], work: Path, out: Path, progress: Progress
) -> list[dict[str, Any]]:
    offsets = np.concatenate([[0], np.cumsum([r["kept"] for r in a])]).tolist()
    jobs = [
        {
            "name": s.name,
            "work": str(work),
            "out": str(out),
            "offset": int(offsets[i]),
            "count": a[i]["kept"],
            "dedup": spec.dedup is not None,
            "format": spec.output.format,
        }
        for i, s in enumerate(shards)
    ]
    return _gather(write_shard, jobs, spec, "write", progress, "name")


def _stage_d(spec: PipelineSpec, out: Path, parts: list[dict[str, Any]], progress: Progress) -> dict[str, Any]:
    from fmstack.model.data import tokenize as tk

    t = spec.tokenize
    assert t is not None
    texts = lambda: iter_texts(out, parts)  # noqa: E731 — each pass reads the parts again: bounded memory
    if t.train is not None:
        progress("train tokenizer", 0, None)
        tok = tk.train_bpe(texts(), vocab_size=t.train.vocab_size, min_frequency=t.train.min_frequency)
        tk.save_tokenizer(tok, out / "tokenizer")
        spec_name = str(out / "tokenizer")
    else:
        spec_name = t.tokenizer  # type: ignore[assignment]
    tokenizer = tk.load_tokenizer(spec_name)
    name = "tokenizer/ (trained by this run)" if t.train is not None else tokenizer.name
    # One encoding pass feeds both the statistics and the packer: encoding is the expensive part.
    # (tee holds at most one batch of texts between the two.)
    stats = tk.TokenStats(name, tokenizer.vocab_size, tokenizer.unk_id)
    for_stats, for_ids = itertools.tee(texts())

    def counted() -> Iterator[list[int]]:
        for text, ids in zip(for_stats, tk.encode_stream(tokenizer, for_ids), strict=True):
            stats.update(text, ids)
            yield ids

    result: dict[str, Any] = {"tokenizer": name}
    if t.pack is not None:
        progress("tokenize and pack", 0, None)
        result["pack"] = tk.pack_blocks(
            counted(),
            t.pack.block_size,
            tokenizer.bos_id,
            tokenizer.eos_id,
            out / "blocks",
            fmt=t.pack.format,
            vocab_size=tokenizer.vocab_size,
            tokenizer=name,
        )
    else:
        progress("tokenize", 0, None)
        collections.deque(counted(), maxlen=0)
    result["stats"] = stats.to_dict()
    return result


def iter_texts(out: Path, parts: list[dict[str, Any]]) -> Any:
    """The texts of the output, in order, streamed from its part files."""
    for p in parts:
        path = out / p["file"]
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)["text"]
        else:
            for batch in read_docs(path, ["text"]):
                yield from batch.column(0).to_pylist()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _input_files(spec: PipelineSpec) -> list[Path]:
    files = []
    for p in map(Path, spec.input.paths):
        files += sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return files


def _manifest(
    spec: PipelineSpec,
    root: Path,
    a: list[dict[str, Any]],
    dedup: dict[str, Any] | None,
    parts: list[dict[str, Any]],
    tokenized: dict[str, Any] | None,
    rejected: list[str],
    out: Path,
) -> dict[str, Any]:
    """Counts, config and hashes of inputs and outputs. No times and no absolute paths: the same input and config
    give a byte-identical manifest."""
    from fmstack import __version__

    clean = sum((StepStats.from_dict(r["clean"]) for r in a), StepStats())
    read = clean.seen
    config = spec.model_dump(mode="json", exclude={"engine", "ray_address", "workers"})
    config["input"]["paths"] = [_rel(Path(p), root) for p in spec.input.paths]
    config["output"]["path"] = "."
    languages = sum((Counter(r["languages"]) for r in a), Counter())
    return {
        "fmstack": __version__,
        "fingerprint": spec.fingerprint(),
        "config": config,
        "counts": {
            "read": read,
            "rejected": len(rejected),
            "after_clean": clean.kept,
            "after_dedup": sum(p["kept"] for p in parts),
        },
        "clean": clean.to_dict(),
        "languages": dict(sorted(languages.items())),
        "dedup": dedup,
        "tokenize": tokenized,
        "inputs": [
            {"path": _rel(p, root), "bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _input_files(spec)
        ],
        "outputs": [
            {"path": p["file"], "documents": p["kept"], "sha256": _sha256(out / p["file"])}
            for p in parts
            if spec.output.data
        ],
    }


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.resolve().relative_to(root))
    except ValueError:
        return str(p)


def _write_rejected(out: Path, rejected: list[str]) -> None:
    atomic_write_bytes(out / "rejected.txt", "".join(f"{r}\n" for r in rejected).encode())


def _write_report_data(work: Path, out: Path, a: list[dict[str, Any]], dedup: dict[str, Any] | None) -> None:
    """Length distributions before and after, kept beside the manifest for `fmstack data report`."""
    arrays = [np.load(f) for f in sorted((work / "a").glob("?????.npz"))]
    words_in = np.concatenate([x["words_in"] for x in arrays]) if arrays else np.zeros(0, np.int32)
    words_clean = np.concatenate([x["words_out"] for x in arrays]) if arrays else np.zeros(0, np.int32)
    words_final = words_clean[~np.load(work / "removed.npy")] if dedup else words_clean
    np.savez_compressed(out / ".lengths.npz", words_in=words_in, words_clean=words_clean, words_final=words_final)
    (out / ".lengths.npz").replace(out / "lengths.npz")
