"""Image dedup on real photos (scikit-image's samples) with planted copies, and on easy-VQA's simple shapes."""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageEnhance

from fmstack.model.data.documents import Rejected
from fmstack.model.data.images import (
    DEFAULT_DHASH_THRESHOLD,
    DEFAULT_PHASH_THRESHOLD,
    ImageRecord,
    _near_pairs,
    _popcount,
    _popcount_table,
    dedup_images,
    find_duplicates,
    hamming,
    hash_image,
    iter_images,
    list_images,
)

# Distinct photos, all shipped inside scikit-image (no download).
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "hubble_deep_field", "ihc")
OUTPUTS = ("images.jsonl", "clusters.jsonl", "rejected.jsonl", "stats.json")


def photo(name: str) -> Image.Image:
    fn = skimage.data.immunohistochemistry if name == "ihc" else getattr(skimage.data, name)
    return Image.fromarray(fn())


def half(img: Image.Image) -> Image.Image:
    return img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)


def crop(img: Image.Image, frac: float = 0.02) -> Image.Image:
    dx, dy = int(img.width * frac), int(img.height * frac)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def brighter(img: Image.Image, factor: float = 1.1) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(factor)


# Where each original is stored, and its planted copies: id -> (how it was made, expected kind relative to the
# kept image). Expected kept image per cluster, by the rule: largest area, then largest file, then smallest id.
ORIGINALS = {
    "astronaut": "photos/astronaut.png",
    "camera": "photos/camera.png",
    "coffee": "photos/coffee.jpg",
    "chelsea": "photos/chelsea.jpg",
    "rocket": "photos/rocket.jpg",
    "coins": "photos/coins.png",
    "moon": "photos/moon.PNG",  # upper-case extension is still an image
    "hubble_deep_field": "photos/hubble_deep_field.jpg",
    "ihc": "photos/ihc.png",
}
COPIES = {
    "astronaut": [
        "copies/astronaut_same.png",  # byte-identical
        "copies/astronaut_half.png",
        "copies/astronaut_q40.jpg",
        "copies/astronaut_bright.jpg",
        "copies/nested/deeper/astronaut_crop.jpg",
    ],
    "coffee": ["copies/coffee.png", "copies/coffee_q40.jpg", "copies/coffee_half.jpg"],  # .png: same pixels
    "chelsea": [
        "copies/chelsea_q30.jpg",
        "copies/chelsea_bright.jpg",
        "copies/chelsea_half.png",
        "copies/chelsea_crop.jpg",
    ],
    "camera": ["copies/camera_q50.webp", "copies/camera.bmp"],  # .bmp: same pixels
}
EXPECTED_KEPT = {
    # ties with the original on area and bytes: the smaller id wins
    "astronaut": "copies/astronaut_same.png",
    # the PNG has the JPEG's decoded pixels, so it is an exact duplicate, and it is the larger file
    "coffee": "copies/coffee.png",
    "chelsea": "photos/chelsea.jpg",
    # uncompressed BMP of the same pixels: larger file
    "camera": "copies/camera.bmp",
}
EXACT = {
    "copies/astronaut_same.png",
    "photos/astronaut.png",
    "copies/coffee.png",
    "photos/coffee.jpg",
    "copies/camera.bmp",
    "photos/camera.png",
}
CORRUPT = ("broken/truncated.jpg", "broken/not_an_image.png")


def build_folder(root: Path) -> None:
    imgs = {name: photo(name) for name in PHOTOS}
    for name, rel in ORIGINALS.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".jpg"):
            imgs[name].save(p, "JPEG", quality=95)
        else:
            imgs[name].save(p, "PNG")
    copies = root / "copies"
    (copies / "nested" / "deeper").mkdir(parents=True)
    a = imgs["astronaut"]
    shutil.copyfile(root / ORIGINALS["astronaut"], copies / "astronaut_same.png")
    half(a).save(copies / "astronaut_half.png")
    a.save(copies / "astronaut_q40.jpg", quality=40)
    brighter(a).save(copies / "astronaut_bright.jpg", quality=90)
    crop(a).save(copies / "nested/deeper/astronaut_crop.jpg", quality=90)
    with Image.open(root / ORIGINALS["coffee"]) as c:
        c.save(copies / "coffee.png")  # decoded JPEG pixels, stored losslessly
    imgs["coffee"].save(copies / "coffee_q40.jpg", quality=40)
    half(imgs["coffee"]).save(copies / "coffee_half.jpg", quality=85)
    ch = imgs["chelsea"]
    ch.save(copies / "chelsea_q30.jpg", quality=30)
    brighter(ch, 1.15).save(copies / "chelsea_bright.jpg", quality=85)
    half(ch).save(copies / "chelsea_half.png")
    crop(ch).save(copies / "chelsea_crop.jpg", quality=90)
    imgs["camera"].save(copies / "camera_q50.webp", quality=50)
    imgs["camera"].save(copies / "camera.bmp")
    # unreadable: a truncated JPEG and a text file named .png; a .txt file is not an image and is not looked at
    (root / "broken").mkdir()
    buf = io.BytesIO()
    imgs["rocket"].save(buf, "JPEG", quality=90)
    (root / "broken/truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "broken/not_an_image.png").write_text("this is not a PNG\n")
    (root / "notes.txt").write_text("not an image\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images") / "in"
    root.mkdir()
    build_folder(root)
    return root


@pytest.fixture(scope="module")
def scanned(folder: Path) -> list[ImageRecord | Rejected]:
    return list(iter_images(folder))


@pytest.fixture(scope="module")
def records(scanned: list[ImageRecord | Rejected]) -> list[ImageRecord]:
    return [r for r in scanned if isinstance(r, ImageRecord)]


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory):
    return dedup_images(folder, tmp_path_factory.mktemp("out1"))


def n_images() -> int:
    return len(ORIGINALS) + sum(len(v) for v in COPIES.values()) + len(CORRUPT)


# --- reading ---------------------------------------------------------------------------------------------------


def test_walks_recursively_in_sorted_order_and_only_image_extensions(folder: Path, scanned) -> None:
    ids = [r.id if isinstance(r, ImageRecord) else Path(r.source).relative_to(folder).as_posix() for r in scanned]
    assert ids == sorted(ids)
    assert len(ids) == n_images()
    assert "notes.txt" not in ids
    assert "photos/moon.PNG" in ids
    assert "copies/nested/deeper/astronaut_crop.jpg" in ids
    assert [p.relative_to(folder).as_posix() for p in list_images(folder)] == ids


def test_record_fields(folder: Path, records: list[ImageRecord]) -> None:
    by_id = {r.id: r for r in records}
    a = by_id["photos/astronaut.png"]
    assert (a.width, a.height, a.format) == (512, 512, "PNG")
    assert a.path == str(folder / "photos/astronaut.png")
    assert a.bytes == (folder / "photos/astronaut.png").stat().st_size
    assert len(a.sha256) == 64 and len(a.pixel_sha256) == 64
    assert 0 <= a.phash < 2**64 and 0 <= a.dhash < 2**64
    assert by_id["copies/astronaut_half.png"].width == 256
    assert by_id["copies/camera_q50.webp"].format == "WEBP"
    assert by_id["copies/camera.bmp"].format == "BMP"
    # same bytes -> same file hash; same pixels in another format -> same pixel hash only
    assert a.sha256 == by_id["copies/astronaut_same.png"].sha256
    cof, cof_png = by_id["photos/coffee.jpg"], by_id["copies/coffee.png"]
    assert cof.sha256 != cof_png.sha256 and cof.pixel_sha256 == cof_png.pixel_sha256
    # grayscale PNG and the BMP of the same pixels
    assert by_id["photos/camera.png"].pixel_sha256 == by_id["copies/camera.bmp"].pixel_sha256
    assert ImageRecord.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_unreadable_files_are_rejected_with_their_path(folder: Path, scanned) -> None:
    rejected = [r for r in scanned if isinstance(r, Rejected)]
    assert sorted(r.source for r in rejected) == sorted(str(folder / rel) for rel in CORRUPT)
    for r in rejected:
        assert r.line == 0
        assert r.reason.startswith("unreadable image")
    trunc = next(r for r in rejected if r.source.endswith("truncated.jpg"))
    assert "truncated" in trunc.reason


def test_hash_image_never_raises(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    for p in (tmp_path / "empty.jpg", tmp_path / "dir.png", tmp_path / "missing.gif"):
        r = hash_image(p, tmp_path)
        assert isinstance(r, Rejected) and r.source == str(p)
        assert " at 0x" not in r.reason  # no memory addresses: reasons are the same on every run


def test_hash_image_ids_relative_to_root(folder: Path) -> None:
    p = folder / "copies/nested/deeper/astronaut_crop.jpg"
    assert hash_image(p, folder).id == "copies/nested/deeper/astronaut_crop.jpg"
    assert hash_image(p).id == "astronaut_crop.jpg"


def test_process_pool_gives_the_same_records(folder: Path, scanned) -> None:
    assert list(iter_images(folder, workers=2)) == scanned


# --- thresholds ------------------------------------------------------------------------------------------------


def test_default_thresholds_separate_planted_copies_from_distinct_photos(records: list[ImageRecord]) -> None:
    """The measurement behind the defaults: every planted copy is closer to its original than the threshold, every
    pair of distinct photos is further. Run with -s to see the distances."""
    by_id = {r.id: r for r in records}
    copy_d = {}
    for name, copies in COPIES.items():
        orig = by_id[ORIGINALS[name]]
        for c in copies:
            copy_d[c] = (hamming(orig.phash, by_id[c].phash), hamming(orig.dhash, by_id[c].dhash))
    distinct_d = {
        (a, b): (hamming(by_id[ORIGINALS[a]].phash, by_id[ORIGINALS[b]].phash),
                 hamming(by_id[ORIGINALS[a]].dhash, by_id[ORIGINALS[b]].dhash))
        for a, b in itertools.combinations(PHOTOS, 2)
    }  # fmt: skip
    print("\nplanted copies (pHash, dHash):", copy_d)
    print("closest distinct photos by pHash:", sorted(distinct_d.items(), key=lambda kv: kv[1][0])[:3])
    print("closest distinct photos by dHash:", sorted(distinct_d.items(), key=lambda kv: kv[1][1])[:3])
    assert max(p for p, _ in copy_d.values()) <= DEFAULT_PHASH_THRESHOLD
    assert max(d for _, d in copy_d.values()) <= DEFAULT_DHASH_THRESHOLD
    assert min(p for p, _ in distinct_d.values()) > DEFAULT_PHASH_THRESHOLD
    assert min(d for _, d in distinct_d.values()) > DEFAULT_DHASH_THRESHOLD


def test_popcount_matches_python() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**64 - 1, size=1000, dtype=np.uint64, endpoint=True)
    want = [int(v).bit_count() for v in x.tolist()]
    assert _popcount(x).tolist() == want
    assert _popcount_table(x).tolist() == want
    assert _popcount_table(x.reshape(10, 100)).tolist() == np.array(want).reshape(10, 100).tolist()


def test_near_pairs_in_blocks_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**64 - 1, size=60, dtype=np.uint64, endpoint=True)
    flips = np.array([1 << int(b) for b in rng.integers(0, 64, size=60)], dtype=np.uint64)
    values = np.unique(np.concatenate([base, base ^ flips, base ^ flips ^ (flips << np.uint64(1))]))
    vals = values.tolist()
    want = sorted((i, j) for i, j in itertools.combinations(range(len(vals)), 2) if hamming(vals[i], vals[j]) <= 3)
    assert want  # the planted near values are there
    for block in (1, 7, 500, 1 << 18):
        assert sorted(_near_pairs(values, 3, block=block)) == want


# --- clusters --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("linkage", ["single", "kept"])
@pytest.mark.parametrize("method", ["phash", "dhash", "both"])
def test_every_planted_copy_joins_its_original_and_distinct_photos_stay_apart(records, method, linkage) -> None:
    clusters = find_duplicates(records, method=method, linkage=linkage)
    got = {frozenset([c.kept, *(m.id for m in c.members)]) for c in clusters}
    want = {frozenset([ORIGINALS[name], *copies]) for name, copies in COPIES.items()}
    assert got == want
    kept_by_original = {ORIGINALS[n]: EXPECTED_KEPT[n] for n in COPIES}
    for c in clusters:
        ids = {c.kept, *(m.id for m in c.members)}
        (original,) = ids & set(kept_by_original)
        assert c.kept == kept_by_original[original]


def test_kept_image_follows_the_rule(folder: Path, records: list[ImageRecord]) -> None:
    clusters = find_duplicates(records)
    for c in clusters:
        ids = [c.kept, *(m.id for m in c.members)]

        def rule(rel: str) -> tuple[int, int, str]:
            with Image.open(folder / rel) as im:
                area = im.width * im.height
            return (-area, -(folder / rel).stat().st_size, rel)

        assert c.kept == min(ids, key=rule)


def test_members_record_kind_and_distance(records: list[ImageRecord]) -> None:
    clusters = find_duplicates(records)
    for c in clusters:
        assert [m.id for m in c.members] == sorted(m.id for m in c.members)
        for m in c.members:
            if m.id in EXACT:
                assert (m.kind, m.distance) == ("exact", 0), m
            else:
                assert m.kind == "near", m
                assert m.distance == m.phash_distance <= DEFAULT_PHASH_THRESHOLD
    assert [c.id for c in clusters] == list(range(len(clusters)))
    assert [c.kept for c in clusters] == sorted(c.kept for c in clusters)


@pytest.mark.parametrize("linkage", ["single", "kept"])
def test_result_does_not_depend_on_record_order(records: list[ImageRecord], linkage) -> None:
    want = [c.to_dict() for c in find_duplicates(records, linkage=linkage)]
    shuffled = list(records)
    for seed in range(3):
        random.Random(seed).shuffle(shuffled)
        assert [c.to_dict() for c in find_duplicates(shuffled, linkage=linkage)] == want


@pytest.mark.parametrize("linkage", ["single", "kept"])
def test_exact_duplicates_are_found_whatever_the_threshold(records: list[ImageRecord], linkage) -> None:
    clusters = find_duplicates(records, phash_threshold=-1, linkage=linkage)
    got = {frozenset([c.kept, *(m.id for m in c.members)]) for c in clusters}
    assert got == {
        frozenset({"copies/astronaut_same.png", "photos/astronaut.png"}),
        frozenset({"copies/coffee.png", "photos/coffee.jpg"}),
        frozenset({"copies/camera.bmp", "photos/camera.png"}),
    }


def test_chaining_is_transitive_and_visible_in_distance() -> None:
    """Union-find joins a-b and b-c even when a and c are further apart than the threshold; the member's distance
    to the kept image shows it."""

    def rec(id_: str, h: int, area: int) -> ImageRecord:
        return ImageRecord(id_, id_, id_ * 8, id_ * 8, h, h, area, 1, "PNG", 100)

    a, b, c = rec("a", 0, 10), rec("b", (1 << 8) - 1, 5), rec("c", (1 << 16) - 1, 1)  # a-b 8, b-c 8, a-c 16
    (cl,) = find_duplicates([c, a, b], phash_threshold=8)
    assert cl.kept == "a"
    assert [(m.id, m.kind, m.distance) for m in cl.members] == [("b", "near", 8), ("c", "near", 16)]
    # linkage "kept": b joins a (the better image); c is 16 from a, so it is kept alone
    (cl,) = find_duplicates([c, a, b], phash_threshold=8, linkage="kept")
    assert (cl.kept, [(m.id, m.distance) for m in cl.members]) == ("a", [("b", 8)])
    # an exact copy of b moves with b, measured against a
    b2 = ImageRecord("b2", "b2", b.sha256, "other", b.phash, b.dhash, 5, 1, "PNG", 100)
    (cl,) = find_duplicates([a, b, b2, c], phash_threshold=8, linkage="kept")
    assert [(m.id, m.kind, m.distance) for m in cl.members] == [("b", "near", 8), ("b2", "near", 8)]


def test_both_needs_both_hashes_close_even_for_equal_phash() -> None:
    def rec(id_: str, phash: int, dhash: int) -> ImageRecord:
        return ImageRecord(id_, id_, id_ * 8, id_ * 8, phash, dhash, 10, 10, "PNG", 100)

    recs = [rec("a", 0, 0), rec("b", 0, 2**64 - 1), rec("c", 1, (1 << 4) - 1), rec("d", 0, 2**64 - 1)]
    # pHash alone: all four within 1; both: a-c (dHash 4) and b-d (dHash 0), not a-b (dHash 64)
    assert [c.to_dict()["size"] for c in find_duplicates(recs)] == [4]
    got = [(c.kept, [m.id for m in c.members]) for c in find_duplicates(recs, method="both", dhash_threshold=4)]
    assert got == [("a", ["c"]), ("b", ["d"])]


def test_rejects_bad_arguments(records: list[ImageRecord]) -> None:
    with pytest.raises(ValueError, match="method"):
        find_duplicates(records, method="ahash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="linkage"):
        find_duplicates(records, linkage="complete")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate record id"):
        find_duplicates([records[0], records[0]])


# --- the step --------------------------------------------------------------------------------------------------


def test_dedup_stats_and_outputs(folder: Path, run) -> None:
    n_exact = len(EXACT) - len([k for k in EXPECTED_KEPT.values() if k in EXACT])
    n_near = sum(len(v) for v in COPIES.values()) - n_exact
    assert run.stats.to_dict() == {
        "seen": n_images(),
        "kept": len(PHOTOS),
        "dropped": {"exact_duplicate": n_exact, "near_duplicate": n_near, "unreadable": len(CORRUPT)},
        "changed": {},
    }
    out = run.files["images.jsonl"].parent
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # no temporary files left behind
    rows = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert {r["id"] for r in rows} == {EXPECTED_KEPT.get(n, ORIGINALS[n]) for n in PHOTOS}
    assert {r["id"]: r["duplicates"] for r in rows if r["cluster"] is not None} == {
        EXPECTED_KEPT[n]: len(COPIES[n]) for n in COPIES
    }
    assert all(ImageRecord.from_dict(r) in run.kept for r in rows)
    clusters = [json.loads(line) for line in (out / "clusters.jsonl").read_text().splitlines()]
    assert clusters == [c.to_dict() for c in run.clusters]
    assert {c["kept"]: c["size"] for c in clusters} == {EXPECTED_KEPT[n]: 1 + len(COPIES[n]) for n in COPIES}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rejected] == [str(folder / rel) for rel in sorted(CORRUPT)]
    manifest = json.loads((out / "stats.json").read_text())
    assert {k: manifest[k] for k in run.stats.to_dict()} == run.stats.to_dict()
    assert manifest["config"]["method"] and len(manifest["outputs"]) == 3


def test_same_folder_gives_byte_identical_outputs(folder: Path, run, tmp_path: Path) -> None:
    again = dedup_images(folder, tmp_path / "again")
    pooled = dedup_images(folder, tmp_path / "pooled", workers=2)
    for name in OUTPUTS:
        want = run.files[name].read_bytes()
        assert again.files[name].read_bytes() == want, name
        assert pooled.files[name].read_bytes() == want, name
    # and over an existing output folder
    rerun = dedup_images(folder, tmp_path / "again")
    assert all(rerun.files[name].read_bytes() == run.files[name].read_bytes() for name in OUTPUTS)


def test_copy_writes_the_kept_images(folder: Path, run, tmp_path: Path) -> None:
    res = dedup_images(folder, tmp_path / "out", copy=True)
    copied = sorted(p.relative_to(tmp_path / "out/images").as_posix() for p in (tmp_path / "out/images").rglob("*"))
    copied = [c for c in copied if (tmp_path / "out/images" / c).is_file()]
    assert copied == sorted(r.id for r in run.kept)
    for r in res.kept:
        assert (tmp_path / "out/images" / r.id).read_bytes() == (folder / r.id).read_bytes()


def test_out_dir_may_not_be_inside_the_folder(folder: Path) -> None:
    with pytest.raises(ValueError, match="inside"):
        dedup_images(folder, folder / "dedup")
    with pytest.raises(ValueError, match="inside"):
        dedup_images(folder, folder)


# --- easy-VQA: many small, simple, look-alike images -------------------------------------------------------------


def easy_vqa_images() -> Path:
    # find_spec locates the package without importing it; easy-vqa also installs a top-level `test` package,
    # which is never imported here.
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or spec.origin is None:
        pytest.skip("easy-vqa is not installed")
    return Path(spec.origin).parent / "data" / "train" / "images"


def test_easy_vqa_sample(tmp_path: Path) -> None:
    """200 easy-VQA images: a coloured circle, rectangle or triangle on a pale background, 64x64. None is a copy
    of another, but perceptual hashes work on a grey 32x32 (pHash) or 9x8 (dHash) thumbnail, where a small shape
    at the same place looks the same whatever its colour, so many are grouped as near duplicates, and single
    linkage chains them into large clusters. This reports the numbers rather than asserting them; it asserts the
    invariants, and that linkage "kept" keeps every member within the threshold of its kept image."""
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(easy_vqa_images().glob("*.png"), key=lambda p: int(p.stem))[:200]:
        shutil.copyfile(p, src / p.name)
    summary = {}
    for method, linkage in itertools.product(("phash", "dhash", "both"), ("single", "kept")):
        res = dedup_images(src, tmp_path / f"{method}-{linkage}", method=method, linkage=linkage)
        s = res.stats
        assert s.seen == 200 and not res.rejected
        assert s.kept + sum(s.dropped.values()) == s.seen
        assert s.dropped["exact_duplicate"] == 0  # the images are all different
        members = [m for c in res.clusters for m in c.members]
        assert len(members) == len({m.id for m in members}) == s.dropped["near_duplicate"]
        assert not {m.id for m in members} & {r.id for r in res.kept}
        if linkage == "kept":
            for m in members:
                assert m.phash_distance <= DEFAULT_PHASH_THRESHOLD or method == "dhash"
                assert m.dhash_distance <= DEFAULT_DHASH_THRESHOLD or method == "phash"
        summary[f"{method}/{linkage}"] = (s.kept, max((c.size for c in res.clusters), default=1))
    print("\neasy-VQA, 200 images: (kept, largest cluster) by method/linkage:", summary)
    for method in ("phash", "dhash", "both"):  # no chains, fewer merges
        assert summary[f"{method}/kept"][0] >= summary[f"{method}/single"][0]
