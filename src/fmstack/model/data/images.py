"""Image deduplication: exact copies by content hash, near copies by perceptual hash (pHash / dHash).

`iter_images` walks a folder in sorted order and hashes every file with an image extension; `hash_image` does one
path and is what a process pool maps over. `find_duplicates` groups the records: exact duplicates first (same file
bytes or same decoded pixels), then near duplicates whose 64-bit perceptual hashes are within a Hamming distance;
groups are joined with union-find and one image per cluster is kept by a fixed rule. `dedup_images` runs it all on
a folder and writes `images.jsonl`, `clusters.jsonl`, `rejected.jsonl` and `stats.json`, byte-identical for the
same input.

Default thresholds were measured on 23 scikit-image sample images (253 distinct pairs) and copies of 13 of them:
50% and 25% resizes, JPEG at quality 30..90, brightness x0.9..1.2, contrast x1.2 were within pHash 6 / dHash 9 of
their original, a 2% crop on every side of a photo within 8 / 8; the closest distinct pair was 20 apart in pHash
and 16 in dHash. Larger crops (3% per side and up) and crops of repetitive textures are not reliably caught. Images
with little content (a small shape on a flat background) hash alike whatever their colour: see the tests.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fmstack.model.data.documents import Rejected, StepStats

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})

# Largest Hamming distance (of 64 bits) at which two images still count as the same picture: above every planted
# copy (pHash <= 8, dHash <= 9), below every distinct pair of sample photos (pHash >= 20, dHash >= 16).
DEFAULT_PHASH_THRESHOLD = 10
DEFAULT_DHASH_THRESHOLD = 12

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")

Method = Literal["phash", "dhash", "both"]
Linkage = Literal["single", "kept"]

# Modes that convert to RGBA without losing information, so identical pictures stored as L, P, RGB or RGBA get
# the same pixel hash. Other modes (I;16, F, CMYK, ...) are hashed in their own mode.
_LOSSLESS_TO_RGBA = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"})


@dataclass(slots=True)
class ImageRecord:
    """One readable image. `id` is its path relative to the folder (POSIX separators); `sha256` is of the file's
    bytes and `pixel_sha256` of its decoded pixels (after EXIF orientation), so a re-encoded copy with the same
    pixels is an exact duplicate too. `phash` and `dhash` are 64-bit perceptual hashes (imagehash, hash_size 8) as
    unsigned ints; `width`/`height` are as displayed (after EXIF orientation); `bytes` is the file size."""

    id: str
    path: str
    sha256: str
    pixel_sha256: str
    phash: int
    dhash: int
    width: int
    height: int
    format: str
    bytes: int

    @property
    def area(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageRecord:
        return cls(**{k: d[k] for k in cls.__slots__})


@dataclass(slots=True)
class ClusterMember:
    """An image removed in favour of its cluster's kept image. `kind` is "exact" when it has the kept image's file
    bytes or pixels, else "near"; `distance` is the Hamming distance of its hash to the kept image's (pHash for
    method "phash" and "both", dHash for "dhash"; 0 for exact). Clusters are formed transitively, so a member
    can be further from the kept image than the threshold when it was joined through another member."""

    id: str
    kind: Literal["exact", "near"]
    distance: int
    phash_distance: int
    dhash_distance: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Cluster:
    """A group of two or more images that are the same picture: one kept, the rest removed."""

    id: int
    kept: str
    members: list[ClusterMember] = field(default_factory=list)

    @property
    def size(self) -> int:
        return 1 + len(self.members)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kept": self.kept, "size": self.size, "members": [m.to_dict() for m in self.members]}


@dataclass
class ImageDedupResult:
    """What `dedup_images` did: the counters, the kept records, the clusters, the unreadable files, and the files
    it wrote."""

    stats: StepStats
    kept: list[ImageRecord]
    clusters: list[Cluster]
    rejected: list[Rejected]
    files: dict[str, Path]


# --- reading and hashing -----------------------------------------------------------------------------------------


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Every file under `folder` (recursively) with an image extension, case-insensitive, sorted by relative
    POSIX path so the order is the same on every machine."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                path = Path(dirpath) / name
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]


def _hash_to_int(h: imagehash.ImageHash) -> int:
    return int(str(h), 16)


def _pixel_sha256(img: Image.Image) -> str:
    if img.mode in _LOSSLESS_TO_RGBA:
        img = img.convert("RGBA")
    digest = hashlib.sha256(f"{img.mode} {img.width}x{img.height}\n".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


def hash_image(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> ImageRecord | Rejected:
    """Read and hash one image file. Never raises: a file that cannot be read, is not an image, or is corrupt or
    truncated comes back as `Rejected(path, 0, reason)`. `root` is the folder the record's `id` is relative to
    (default: the file's own folder; a path outside `root` keeps its whole path as id). Animated images are
    hashed by their first frame. A module-level function of picklable arguments, so a process pool can map it over
    paths. Truncated files are caught only while `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is False (Pillow's
    default)."""
    path = Path(path)
    try:
        rel = path.relative_to(root).as_posix() if root is not None else path.name
    except ValueError:  # not under root: the path is the best id there is
        rel = path.as_posix()
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # structure and checksums (PNG CRCs); does not decode the pixels
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            img.load()  # decodes every pixel: a truncated file fails here
            shown = ImageOps.exif_transpose(img)
            width, height = shown.size
            if width == 0 or height == 0:
                return Rejected(str(path), 0, f"empty image ({width}x{height})")
            pixel_sha = _pixel_sha256(shown)
            gray = shown if shown.mode in ("L", "RGB", "RGBA", "P", "1", "LA") else shown.convert("RGB")
            phash = _hash_to_int(imagehash.phash(gray, hash_size=8))
            dhash = _hash_to_int(imagehash.dhash(gray, hash_size=8))
    except UnidentifiedImageError:
        return Rejected(str(path), 0, "unreadable image: not an image format Pillow can read")
    except Exception as e:  # noqa: BLE001 - any failure to decode is a rejection, never fatal
        # no object reprs with memory addresses: the same file must give the same reason on every run
        reason = _ADDRESS.sub(">", f"{type(e).__name__}: {e}".replace("\n", " "))
        return Rejected(str(path), 0, f"unreadable image: {reason}")
    return ImageRecord(
        id=rel,
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        pixel_sha256=pixel_sha,
        phash=phash,
        dhash=dhash,
        width=width,
        height=height,
        format=fmt,
        bytes=len(data),
    )


def iter_images(
    folder: str | os.PathLike[str], *, workers: int = 1, paths: Sequence[Path] | None = None
) -> Iterator[ImageRecord | Rejected]:
    """Hash every image under `folder` in sorted order (see `list_images`), yielding an `ImageRecord` or, for a
    file that cannot be read, a `Rejected`. With `workers` > 1 the files are hashed in a process pool; the order
    of the results is the same. `paths` restricts the walk to those files (they must be under `folder`)."""
    root = Path(folder)
    todo = list(paths) if paths is not None else list_images(root)
    if workers <= 1 or len(todo) < 2:
        for p in todo:
            yield hash_image(p, root)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(partial(hash_image, root=root), todo, chunksize=max(1, min(64, len(todo) // (4 * workers))))


# --- grouping ----------------------------------------------------------------------------------------------------


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_table(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array, by a table of bytes (numpy < 2)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _BYTE_BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _popcount_table(x)


def hamming(a: int, b: int) -> int:
    """Hamming distance between two hashes given as ints."""
    return (a ^ b).bit_count()


def _near_pairs(values: np.ndarray, threshold: int, block: int = 1 << 18) -> Iterator[tuple[int, int]]:
    """Index pairs (i < j) of `values` (distinct uint64 hashes) at Hamming distance <= threshold. Blocked all-pairs:
    O(n^2) popcounts, vectorized, at most `block` at a time in memory."""
    n = len(values)
    if n < 2 or threshold < 0:
        return
    rows = max(1, block // n)
    for start in range(0, n - 1, rows):
        stop = min(n - 1, start + rows)
        # rows start..stop-1 against columns start+1..n-1; keep only j > i.
        dist = _popcount(values[start:stop, None] ^ values[None, start + 1 :])
        ii, jj = np.nonzero(dist <= threshold)
        jj = jj + start + 1
        ii = ii + start
        keep = jj > ii
        yield from zip(ii[keep].tolist(), jj[keep].tolist(), strict=True)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the smaller index becomes the root, so the structure does not depend on the order of unions
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra


def _keep_key(r: ImageRecord) -> tuple[int, int, str]:
    """Largest pixel area first, then largest file, then smallest id."""
    return (-r.area, -r.bytes, r.id)


def _single_linkage(
    recs: list[ImageRecord], uf: _UnionFind, method: Method, phash_threshold: int, dhash_threshold: int
) -> None:
    """Join every near pair into `uf` (already holding the exact duplicates): clusters are connected components."""
    primary = "dhash" if method == "dhash" else "phash"
    primary_threshold = dhash_threshold if method == "dhash" else phash_threshold
    if primary_threshold < 0:
        return
    by_value: dict[int, list[int]] = {}  # compare distinct hash values once each, then map back to the records
    for i, r in enumerate(recs):
        by_value.setdefault(getattr(r, primary), []).append(i)
    values = sorted(by_value)

    def link(ga: list[int], gb: list[int] | None) -> None:
        """Join the records of two hash values (or, with gb None, the records sharing one value)."""
        if method != "both":  # the hash decides alone: one link per pair of values is enough
            for j in ga[1:] if gb is None else gb[:1]:
                uf.union(ga[0], j)
            return
        pairs = itertools.combinations(ga, 2) if gb is None else itertools.product(ga, gb)
        for i, j in pairs:
            if hamming(recs[i].dhash, recs[j].dhash) <= dhash_threshold:
                uf.union(i, j)

    for group in by_value.values():  # same primary hash: distance 0
        if len(group) > 1:
            link(group, None)
    if len(values) > 1:
        for a, b in _near_pairs(np.array(values, dtype=np.uint64), primary_threshold):
            link(by_value[values[a]], by_value[values[b]])


def _kept_linkage(
    recs: list[ImageRecord], uf: _UnionFind, method: Method, phash_threshold: int, dhash_threshold: int
) -> None:
    """Join near duplicates to a kept image only: in keep-rule order, each image not yet taken is kept and takes
    every later image within the threshold of it. No chains: every member is within the threshold of its kept
    image. Exact duplicates (already in `uf`) move as one, represented by their best image."""
    if (dhash_threshold if method == "dhash" else phash_threshold) < 0:
        return
    roots: dict[int, list[int]] = {}
    for i in range(len(recs)):
        roots.setdefault(uf.find(i), []).append(i)
    units = sorted((min(g, key=lambda i: _keep_key(recs[i])) for g in roots.values()), key=lambda i: _keep_key(recs[i]))
    ph = np.array([recs[i].phash for i in units], dtype=np.uint64)
    dh = np.array([recs[i].dhash for i in units], dtype=np.uint64)
    free = np.ones(len(units), dtype=bool)
    for u in range(len(units)):
        if not free[u]:
            continue
        free[u] = False
        rest = np.flatnonzero(free[u + 1 :]) + u + 1
        if not len(rest):
            break
        near = np.ones(len(rest), dtype=bool)
        if method in ("phash", "both"):
            near &= _popcount(ph[rest] ^ ph[u]) <= phash_threshold
        if method in ("dhash", "both"):
            near &= _popcount(dh[rest] ^ dh[u]) <= dhash_threshold
        for v in rest[near].tolist():
            uf.union(units[u], units[v])
        free[rest[near]] = False


def find_duplicates(
    records: Iterable[ImageRecord],
    *,
    phash_threshold: int = DEFAULT_PHASH_THRESHOLD,
    dhash_threshold: int = DEFAULT_DHASH_THRESHOLD,
    method: Method = "phash",
    linkage: Linkage = "single",
) -> list[Cluster]:
    """Group `records` into clusters of the same picture and choose one to keep in each.

    Exact duplicates (same `sha256` of the file, or same `pixel_sha256`) are always grouped. Near duplicates are
    pairs whose pHash distance is <= `phash_threshold` (method "phash"), whose dHash distance is <=
    `dhash_threshold` ("dhash"), or both ("both": stricter, fewer false matches). A negative threshold turns
    near-duplicate matching off. The kept image has the largest pixel area, then the largest file, then the
    smallest id. Returns only clusters of two or more, numbered in order of their kept image's id; members are
    sorted by id. The result does not depend on the order of `records`; ids must be unique.

    `linkage` "single" joins near pairs transitively (union-find): a-b and b-c put a, b and c together even when a
    and c are far apart, so on images that all look alike a chain can take in most of a data set (see the tests
    on easy-VQA). "kept" never chains: each image joins a kept image within the threshold of it, or is kept.

    Single linkage compares every distinct hash value with every other (vectorized XOR and popcount, in blocks of
    a size that stays in cache): about 5 s per 10^9 pairs on one core, so 10^5 distinct hashes take some 25 s;
    past a few 10^5 an index (multi-index hashing, BK-tree) would be needed. "kept" costs one vectorized pass per
    kept image."""
    if method not in ("phash", "dhash", "both"):
        raise ValueError(f"method must be 'phash', 'dhash' or 'both', not {method!r}")
    if linkage not in ("single", "kept"):
        raise ValueError(f"linkage must be 'single' or 'kept', not {linkage!r}")
    recs = sorted(records, key=lambda r: r.id)
    ids = [r.id for r in recs]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"duplicate record id: {dup!r}")
    n = len(recs)
    uf = _UnionFind(n)

    # exact: same file bytes or same pixels
    for attr in ("sha256", "pixel_sha256"):
        first: dict[str, int] = {}
        for i, r in enumerate(recs):
            key = getattr(r, attr)
            if key in first:
                uf.union(first[key], i)
            else:
                first[key] = i

    link = _single_linkage if linkage == "single" else _kept_linkage
    link(recs, uf, method, phash_threshold, dhash_threshold)

    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)

    clusters: list[Cluster] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        kept = min((recs[i] for i in members), key=_keep_key)
        removed = []
        for i in members:
            r = recs[i]
            if r.id == kept.id:
                continue
            exact = r.sha256 == kept.sha256 or r.pixel_sha256 == kept.pixel_sha256
            pd, dd = hamming(r.phash, kept.phash), hamming(r.dhash, kept.dhash)
            removed.append(
                ClusterMember(
                    id=r.id,
                    kind="exact" if exact else "near",
                    distance=0 if exact else (dd if method == "dhash" else pd),
                    phash_distance=pd,
                    dhash_distance=dd,
                )
            )
        removed.sort(key=lambda m: m.id)
        clusters.append(Cluster(id=0, kept=kept.id, members=removed))
    clusters.sort(key=lambda c: c.kept)
    for k, c in enumerate(clusters):
        c.id = k
    return clusters


# --- the step ----------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def dedup_images(
    folder: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    method: Method = "phash",
    phash_threshold: int = DEFAULT_PHASH_THRESHOLD,
    dhash_threshold: int = DEFAULT_DHASH_THRESHOLD,
    linkage: Linkage = "single",
    copy: bool = False,
    workers: int = 1,
) -> ImageDedupResult:
    """Deduplicate the images under `folder` and write the outcome to `out_dir`:

    - `images.jsonl`: one row per kept image (its `ImageRecord` plus `cluster`, the cluster id or null, and
      `duplicates`, how many images were removed in its favour), in id order;
    - `clusters.jsonl`: one row per cluster of two or more (`id`, `kept`, `size`, `members` with `kind` and
      `distance`);
    - `rejected.jsonl`: files with an image extension that could not be read (`source`, `line`, `reason`);
    - `stats.json`: the manifest: the `StepStats` (dropped under "exact_duplicate", "near_duplicate" and
      "unreadable"), the config, and the sha256 of the other outputs (each kept image's own hash is in its row).

    `method`, the thresholds and `linkage` are those of `find_duplicates`. With `copy`, the kept images are also
    copied to `out_dir/images/<id>` (files left there by an earlier run are not removed). Every file is written to
    a temporary name and moved into place. The same folder gives byte-identical files, whatever `workers` is.
    `out_dir` may not be inside `folder`, as a later run would read its output as input."""
    root = Path(folder)
    out = Path(out_dir)
    root_r, out_r = root.resolve(), out.resolve()
    if _is_within(out_r, root_r):
        raise ValueError(f"out_dir {out} must not be inside the input folder {root}")
    if copy and _is_within(root_r, out_r / "images"):
        raise ValueError(f"input folder {root} is inside {out / 'images'}, where kept images would be copied")

    records: list[ImageRecord] = []
    rejected: list[Rejected] = []
    for item in iter_images(root, workers=workers):
        (records if isinstance(item, ImageRecord) else rejected).append(item)

    clusters = find_duplicates(
        records, phash_threshold=phash_threshold, dhash_threshold=dhash_threshold, method=method, linkage=linkage
    )
    removed: dict[str, ClusterMember] = {m.id: m for c in clusters for m in c.members}
    cluster_of: dict[str, Cluster] = {c.kept: c for c in clusters}
    kept = [r for r in records if r.id not in removed]

    stats = StepStats(seen=len(records) + len(rejected), kept=len(kept))
    for m in removed.values():
        stats.dropped["exact_duplicate" if m.kind == "exact" else "near_duplicate"] += 1
    if rejected:
        stats.dropped["unreadable"] += len(rejected)

    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("images.jsonl", "clusters.jsonl", "rejected.jsonl", "stats.json")}
    image_rows = []
    for r in kept:
        c = cluster_of.get(r.id)
        image_rows.append(r.to_dict() | {"cluster": c.id if c else None, "duplicates": len(c.members) if c else 0})
    _write_atomic(files["images.jsonl"], _jsonl(image_rows))
    _write_atomic(files["clusters.jsonl"], _jsonl(c.to_dict() for c in clusters))
    _write_atomic(
        files["rejected.jsonl"], _jsonl({"source": x.source, "line": x.line, "reason": x.reason} for x in rejected)
    )
    config = {
        "method": method,
        "phash_threshold": phash_threshold,
        "dhash_threshold": dhash_threshold,
        "linkage": linkage,
    }
    outputs = {
        n: hashlib.sha256(files[n].read_bytes()).hexdigest()
        for n in ("images.jsonl", "clusters.jsonl", "rejected.jsonl")
    }
    summary = stats.to_dict() | {"config": config, "outputs": outputs}
    _write_atomic(files["stats.json"], json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if copy:
        for r in kept:
            _copy_atomic(Path(r.path), out / "images" / r.id)
        files["images"] = out / "images"
    return ImageDedupResult(stats=stats, kept=kept, clusters=clusters, rejected=rejected, files=files)
