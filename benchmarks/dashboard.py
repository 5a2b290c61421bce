"""Dashboard benchmark: how long `/dashboard` takes with 100,000 traces in the chosen range. Goal: under a second.

A temporary store gets `--traces` synthetic traces spread over the last 7 days (three apps, one of them on an A/B
route with two variants, 4 % errors, thumbs on 8 % of answers, judge scores on 10 %, reviews on 15 % of two apps'
answers, some held in crawl), plus stage moves and route changes. Then, against a real `fmstack up` on that store:

1. `GET /api/dashboard` over the 7 days (every trace in range): `--repeats` times, the median and the slowest;
2. the page itself in Chromium (Debian's, via Playwright, when both are there): from navigation until every plot
   is drawn, `--repeats` times.

Usage:
    .venv/bin/python benchmarks/dashboard.py               # 100,000 traces, about a minute on 2 cores
    .venv/bin/python benchmarks/dashboard.py --traces 10000

Writes benchmarks/results/dashboard.json. `populate` is also what tests/server/test_dashboard.py inserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert
from sqlalchemy.orm import sessionmaker

from fmstack.core.store.schema import AbChange, Feedback, ReviewItem, ReviewStageMove, Trace, TraceScore

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = "/usr/bin/chromium"
GOAL_S = 1.0
APPS = (("shop-bot", 0.5), ("support", 0.3), ("docs-qa", 0.2))
VARIANTS = (("smollm2-135m-instruct", 0.9), ("smollm2-priced", 0.1))
CHUNK = 10_000


def populate(sessions: sessionmaker, n: int, days: float = 7, seed: int = 0) -> None:
    """`n` traces over the last `days` days with their feedback, scores and reviews, in a few bulk inserts."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        for start in range(0, n, CHUNK):
            ids = range(start, min(start + CHUNK, n))
            rows = [_trace(rng, i, now - timedelta(seconds=rng.random() * days * 86400)) for i in ids]
            session.execute(insert(Trace), rows)
            ok = [r for r in rows if r["status"] == "ok"]
            _extras(session, rng, ok)
        session.execute(insert(ReviewStageMove), _moves(now))
        session.execute(insert(AbChange), _changes(now))


def _trace(rng: random.Random, i: int, at: datetime) -> dict:
    app = _pick(rng, APPS)
    route, variant = ("shop", _pick(rng, VARIANTS)) if app == "shop-bot" else (None, None)
    status = rng.choices(("ok", "error", "cancelled"), (95, 4, 1))[0]
    prompt, completion = rng.randint(20, 400), rng.randint(5, 200) if status == "ok" else 0
    latency = rng.lognormvariate(6.5, 0.6) * (1.15 if variant == "smollm2-priced" else 1)
    return {
        "id": f"chatcmpl-bench{i:08d}",
        "created_at": at,
        "endpoint": "chat.completions",
        "model": variant or "smollm2-135m-instruct",
        "engine": "llamacpp",
        "app": app,
        "user": f"user-{rng.randint(1, 2000)}",
        "route": route,
        "variant": variant,
        "status": status,
        "status_code": {"ok": 200, "error": 500, "cancelled": 499}[status],
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_ms": latency,
        "ttft_ms": latency * rng.uniform(0.05, 0.3) if status == "ok" else None,
        "cost": (prompt * 1.5 + completion * 6.0) / 1e6,
    }


def _extras(session, rng: random.Random, ok: list[dict]) -> None:
    """Thumbs on 8 % of answers, a judge score on 10 %, a review on 15 % of support's and shop-bot's."""
    feedback = [{"trace_id": r["id"], "rating": rng.choice((1, 1, 1, -1))} for r in ok if rng.random() < 0.08]
    scores = [{"trace_id": r["id"], "metric": "rubric", "value": rng.random()} for r in ok if rng.random() < 0.10]
    reviewed = [r for r in ok if r["app"] != "docs-qa" and rng.random() < 0.15]
    reviews = [_review(rng, r) for r in reviewed]
    for table, rows in ((Feedback, feedback), (TraceScore, scores), (ReviewItem, reviews)):
        if rows:
            session.execute(insert(table), rows)


def _review(rng: random.Random, trace: dict) -> dict:
    crawl = trace["app"] == "support"
    status = rng.choices(("approved", "edited", "rejected", "pending"), (70, 15, 5, 10))[0]
    return {
        "created_at": trace["created_at"],
        "app": trace["app"],
        "trace_id": trace["id"],
        "copy": 0,
        "stage": "crawl" if crawl else "walk",
        "reason": "crawl" if crawl else "sampled",
        "status": status,
        "answer": "…",
        "skipped_by": [],
        "seconds": rng.uniform(5, 90) if status != "pending" else None,
        "reviewer": "ana" if status != "pending" else None,
    }


def _moves(now: datetime) -> list[dict]:
    return [
        {"app": "support", "created_at": now - timedelta(days=6), "from_stage": None, "to_stage": "crawl"},
        {"app": "shop-bot", "created_at": now - timedelta(days=6), "from_stage": None, "to_stage": "crawl"},
        {"app": "shop-bot", "created_at": now - timedelta(days=3), "from_stage": "crawl", "to_stage": "walk"},
    ]


def _changes(now: datetime) -> list[dict]:
    after = {name: round(share * 100) for name, share in VARIANTS}
    created = now - timedelta(days=7)
    return [{"route": "shop", "created_at": created, "action": "create", "before": None, "after": after}]


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in weighted], [w for _, w in weighted])[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(home: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = os.environ | {"FMSTACK_HOME": str(home), "FMSTACK_THREADS": "2"}
    cmd = [sys.executable, "-m", "fmstack", "up", "--model", "smollm2-135m-instruct", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the server did not start")


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (all its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_api(base: str, pid: int, repeats: int) -> tuple[list[float], list[float]]:
    """Wall seconds per request, and the server's CPU seconds per request: what the wall time would be on an idle
    machine (the work is single-threaded), whatever else runs on a busy one."""
    since = (datetime.now(UTC) - timedelta(days=7, minutes=5)).isoformat()
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), process_cpu_seconds(pid)
        response = httpx.get(f"{base}/api/dashboard", params={"since": since}, timeout=60)
        walls.append(time.perf_counter() - t0)
        cpus.append(process_cpu_seconds(pid) - c0)
        response.raise_for_status()
    return walls, cpus


def time_page(base: str, repeats: int) -> list[float] | None:
    """Navigation to the last plot drawn, in Chromium; None without Chromium or Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        for _ in range(repeats):
            t0 = time.perf_counter()
            page.goto(f"{base}/dashboard?range=7d")
            page.wait_for_selector("body[data-state='ready']", timeout=60_000)
            times.append(time.perf_counter() - t0)
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from fmstack.core.config import Settings
    from fmstack.core.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        populate(open_store(Settings(home=home)), args.traces)
        print(f"inserted {args.traces} traces in {time.perf_counter() - t0:.1f} s")
        proc, base = _serve(home)
        try:
            api, api_cpu = time_api(base, proc.pid, args.repeats)
            page = time_page(base, args.repeats)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
        "traces": args.traces,
        "goal_s": GOAL_S,
        "api_s": api,
        "api_server_cpu_s": api_cpu,
        "page_s": page,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = (("GET /api/dashboard", api), ("  server CPU per request", api_cpu), ("page, every plot drawn", page))
    for label, times in rows:
        if times:
            verdict = "meets" if statistics.median(times) < GOAL_S else "MISSES"
            print(f"{label}: median {statistics.median(times):.3f} s, slowest {max(times):.3f} s ({verdict} the goal)")
    print(f"load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
