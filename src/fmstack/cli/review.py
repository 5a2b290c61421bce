"""`fmstack review …`: review policies (crawl, walk, run) and their numbers, stage moves, and the review queue
(next, approve, edit, reject, skip, assign); also `fmstack eval suite from-reviews` and `fmstack train judge`.

Decisions go straight to the store: a server holding a crawl answer sees them within a second.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import typer
from rich.table import Table

from fmstack.cli.common import JSON, Col, command_group, console, print_json, show_rows, store
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError

review_app = command_group(
    "Human review, one stage at a time: crawl (a person approves every answer before delivery), walk (a share is "
    "reviewed after delivery), run (an AI judge picks what a person sees).\n\n"
    "Example: fmstack review policy shop-bot --stage crawl",
    no_args_is_help=True,
)
suite_app = command_group(
    "Make eval suites from what the app's users and reviewers accepted.\n\n"
    "Example: fmstack eval suite from-reviews shop-bot -o suite.yaml",
    no_args_is_help=True,
)

REVIEWER = typer.Option(
    None, "--reviewer", envvar="FMSTACK_REVIEWER", help="Who reviews (default: $FMSTACK_REVIEWER, else your login)."
)
ITEM = typer.Argument(..., help="The review item's id (`fmstack review next` or `list` shows it).")
SECONDS = typer.Option(None, "--seconds", help="Time spent on it (default: since `review next` opened it).")


def _reviewer(given: str | None) -> str:
    return given or os.environ.get("USER") or getpass.getuser()


# ---------- policies ----------


@review_app.command("policy")
def policy(
    app_name: str = typer.Argument(..., metavar="APP", help="The app (its X-Fmstack-App header or API key's app)."),
    stage: str = typer.Option(None, "--stage", help="crawl, walk or run: a new policy's stage (later: review move)."),
    share: float = typer.Option(None, "--share", help="Share of delivered answers sampled for review (walk, run)."),
    double_share: float = typer.Option(None, "--double-share", help="Share of items a second reviewer also reviews."),
    judge: str = typer.Option(None, "--judge", help='Chat model that judges answers ("" for none).'),
    judge_metric: str = typer.Option(None, "--judge-metric", help="rubric (default) or faithfulness (RAG apps)."),
    judge_share: float = typer.Option(None, "--judge-share", help="Share of answers the judge scores in run."),
    threshold: float = typer.Option(None, "--threshold", help="Judge scores (0-1) under it go to a person in run."),
    rubric: str = typer.Option(None, "--rubric", help="What a good answer is: shown to reviewers, used by the judge."),
    hold: float = typer.Option(None, "--hold", help="Seconds a crawl request waits for a reviewer's decision."),
    bar: list[str] = typer.Option(
        None, "--bar", help="A bar to leave a stage, STAGE.BAR=VALUE (crawl.min_approval=0.9)."
    ),
    as_json: bool = JSON,
) -> None:
    """Create or change an app's review policy, and show per stage the approval rate, edit distance, judge-human
    and reviewer-reviewer agreement (Cohen's kappa), volume, time per item, and whether the bars to move on are met.

    Example: fmstack review policy shop-bot --stage walk --share 0.2 --judge qwen2.5-0.5b-instruct --threshold 0.7
    """
    from fmstack.app.review import policy_report
    from fmstack.app.review.policy import save_policy, settings_from
    from fmstack.core.registry import Registry

    values = {
        "share": share,
        "double_share": double_share,
        "judge_model": judge,
        "judge_metric": judge_metric,
        "judge_share": judge_share,
        "threshold": threshold,
        "rubric": rubric,
        "hold_seconds": hold,
        "bars": _bars(bar) if bar else None,
    }
    changes = settings_from({k: v for k, v in values.items() if v is not None})
    sessions = store()
    if stage is not None or changes.model_dump(exclude_none=True):
        with sessions.begin() as session:
            save_policy(session, Registry(get_settings()), app_name, changes, stage)
    with sessions() as session:
        report = policy_report(session, app_name)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)


def _bars(items: list[str]) -> dict[str, dict[str, float]]:
    bars: dict[str, dict[str, float]] = {}
    for item in items:
        name, eq, value = item.partition("=")
        stage, dot, bar_name = name.partition(".")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not (eq and dot and bar_name) or number is None:
            raise FmstackError(f"--bar {item!r}: write STAGE.BAR=NUMBER, e.g. crawl.min_approval=0.9.")
        bars.setdefault(stage, {})[bar_name] = number
    return bars


def _num(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.0f} %" if pct else f"{value:.2f}"


def _print_report(report) -> None:
    p = report.policy
    judge = p.judge or "none"
    console.print(
        f"[bold]{p.app}[/] is in [cyan]{p.stage}[/]; sample {p.share:g}, second reviews {p.double_share:g}, "
        f"judge {judge} ({p.judge_metric}, threshold {p.threshold:g}), crawl hold {p.hold_seconds:g} s",
        soft_wrap=True,
    )
    table = Table("stage", "reviewed", "pending", "approval", "edit dist.", "judge κ", "reviewer κ", "s/item", "bars")
    for stage in report.to_dict()["stages"]:
        checks = stage["bars"]
        bars = (
            "–"
            if checks is None
            else ", ".join(f"{'✓' if c['met'] else '✗'} {c['bar']} {c['required']:g}" for c in checks)
        )
        table.add_row(
            f"[bold]{stage['stage']}[/]" if stage["current"] else stage["stage"],
            str(stage["reviewed"]),
            str(stage["pending"]),
            _num(stage["approval_rate"], pct=True),
            _num(stage["edit_distance"]),
            _num(stage["judge_kappa"]),
            _num(stage["reviewer_kappa"]),
            _num(stage["seconds_per_item"]),
            bars,
        )
    console.print(table)
    nxt = p.next_stage()
    if nxt and report.ready:
        console.print(f"[green]The bars for leaving {p.stage} are met:[/] fmstack review move {p.app} {nxt}")
    elif nxt:
        console.print(f"Not ready for {nxt} yet: the bars marked ✗ must hold first.")


@review_app.command("move")
def move(
    app_name: str = typer.Argument(..., metavar="APP"),
    stage: str = typer.Argument(..., help="crawl, walk or run (one stage on, or any stage back)."),
    force: bool = typer.Option(False, "--force", help="Move on although a bar is not met (recorded as forced)."),
    by: str = typer.Option(None, "--by", help="Who moves it (default: your login); recorded."),
    as_json: bool = JSON,
) -> None:
    """Move an app to another stage, checking the bars; the move is recorded with the numbers at the time.

    Example: fmstack review move shop-bot walk
    """
    from fmstack.app.review import move as move_stage

    with store().begin() as session:
        report = move_stage(session, app_name, stage, _reviewer(by), force)
        result = report.to_dict()
    if as_json:
        print_json(result)
    else:
        console.print(f"{app_name} is now in [cyan]{stage}[/] (recorded; fmstack review history {app_name})")


@review_app.command("history")
def history(app_name: str = typer.Argument(..., metavar="APP"), as_json: bool = JSON) -> None:
    """Every stage move of an app: when, from, to, by whom, and whether the bars were met.

    Example: fmstack review history shop-bot
    """
    from fmstack.app.review.policy import history as moves

    with store()() as session:
        rows = moves(session, app_name)
    columns = (
        Col("at", lambda m: m["at"][:19].replace("T", " ")),
        Col("from", lambda m: m["from"] or "(created)"),
        Col("to", lambda m: m["to"]),
        Col("by", lambda m: m["by"] or "-"),
        Col(
            "bars",
            lambda m: {True: "met", False: "not met", None: "-"}[m["bars_met"]] + (" (forced)" if m["forced"] else ""),
        ),
    )
    show_rows(rows, columns, as_json)


# ---------- the queue ----------


ITEM_COLUMNS = (
    Col("id", lambda i: str(i["id"])),
    Col("created", lambda i: i["created_at"][:19].replace("T", " ")),
    Col("app", lambda i: i["app"]),
    Col("reason", lambda i: i["reason"]),
    Col("status", lambda i: i["status"]),
    Col("judge", lambda i: "-" if i["judge_score"] is None else f"{i['judge_score']:.2f}"),
    Col("reviewer", lambda i: i["reviewer"] or i["assignee"] or "-"),
    Col("answer", lambda i: (i["answer"] or "").replace("\n", " ")[:60]),
)


@review_app.command("list")
def list_(
    app_name: str = typer.Option(None, "--app", help="Only this app."),
    status: str = typer.Option(None, "--status", help="pending, approved, edited, rejected or skipped."),
    reason: str = typer.Option(None, "--reason", help="crawl, sampled, thumbs-down, judge-low or judge-error."),
    limit: int = typer.Option(50, "--limit", help="How many, newest first."),
    as_json: bool = JSON,
) -> None:
    """List review items, newest first.

    Example: fmstack review list --app shop-bot --status pending
    """
    from fmstack.app.review.policy import get_policy
    from fmstack.app.review.queue import item_dict, list_items

    with store()() as session:
        if app_name:
            get_policy(session, app_name)
        rows = [item_dict(i) for i in list_items(session, app=app_name, status=status, reason=reason, limit=limit)]
    show_rows(rows, ITEM_COLUMNS, as_json)


@review_app.command("next")
def next_(
    app_name: str = typer.Option(None, "--app", help="Only this app."),
    reviewer: str = REVIEWER,
    as_json: bool = JSON,
) -> None:
    """Open the next item to review (yours first, then held crawl answers, then the oldest) and show it.

    Example: fmstack review next --app shop-bot
    """
    from fmstack.app.review.policy import get_policy
    from fmstack.app.review.queue import item_dict, next_item
    from fmstack.core.store.schema import Trace

    with store().begin() as session:
        if app_name:
            get_policy(session, app_name)
        item = next_item(session, _reviewer(reviewer), app_name)
        found = item and item_dict(item, session.get(Trace, item.trace_id), get_policy(session, item.app))
    if as_json:
        print_json(found)
    elif found is None:
        console.print("Nothing to review.")
    else:
        _print_item(found)


def _print_item(item: dict) -> None:
    console.print(f"[bold]review {item['id']}[/] · {item['app']} · {item['reason']} · {item['stage']}", highlight=False)
    trace = item.get("trace") or {}
    for message in trace.get("messages") or []:
        console.print(f"[dim]{message.get('role')}:[/] {message.get('content')}", highlight=False, markup=False)
    for source in trace.get("sources") or []:
        console.print(f"[dim]source [{source.get('id')}] {source.get('source')}[/]", highlight=False)
    console.print("[bold]answer:[/]")
    console.print(item["answer"], highlight=False, markup=False)
    if item["judge_score"] is not None or item["judge_reason"]:
        score = "no score" if item["judge_score"] is None else f"{item['judge_score']:.2f}"
        console.print(f"[dim]judge ({item['judge']}): {score} — {item['judge_reason'] or ''}[/]", highlight=False)
    if item.get("rubric"):
        console.print(f"[dim]rubric: {item['rubric']}[/]", highlight=False)
    i = item["id"]
    console.print(f"fmstack review approve {i} | edit {i} --text … | reject {i} --reason … | skip {i}", highlight=False)


def _decide(item_id: int, action: str, reviewer: str | None, as_json: bool, **fields) -> None:
    from fmstack.app.review.queue import decide, item_dict

    with store().begin() as session:
        result = item_dict(decide(session, item_id, action, _reviewer(reviewer), **fields))
    if as_json:
        print_json(result)
    else:
        console.print(f"review {item_id}: {result['status']}")


@review_app.command("approve")
def approve(item_id: int = ITEM, reviewer: str = REVIEWER, seconds: float = SECONDS, as_json: bool = JSON) -> None:
    """Approve an answer as it is (a held crawl answer is delivered).

    Example: fmstack review approve 42
    """
    _decide(item_id, "approve", reviewer, as_json, seconds=seconds)


@review_app.command("edit")
def edit(
    item_id: int = ITEM,
    text: str = typer.Option(None, "--text", help="The corrected answer."),
    file: Path = typer.Option(None, "--file", help="Read the corrected answer from this file."),
    reviewer: str = REVIEWER,
    seconds: float = SECONDS,
    as_json: bool = JSON,
) -> None:
    """Correct an answer: the edit is what a held crawl answer delivers, and a correction for training data.

    Example: fmstack review edit 42 --text "Orders ship within 2 working days."
    """
    if (text is None) == (file is None):
        raise FmstackError("Give the corrected answer with --text or --file (one of them).")
    corrected = text if file is None else file.read_text(encoding="utf-8")
    _decide(item_id, "edit", reviewer, as_json, text=corrected, seconds=seconds)


@review_app.command("reject")
def reject(
    item_id: int = ITEM,
    reason: str = typer.Option(..., "--reason", help="Why (a held crawl answer's user gets it as the error)."),
    reviewer: str = REVIEWER,
    seconds: float = SECONDS,
    as_json: bool = JSON,
) -> None:
    """Reject an answer, with a reason.

    Example: fmstack review reject 42 --reason "Invents a refund policy."
    """
    _decide(item_id, "reject", reviewer, as_json, reason=reason, seconds=seconds)


@review_app.command("skip")
def skip(item_id: int = ITEM, reviewer: str = REVIEWER, as_json: bool = JSON) -> None:
    """Skip an item: a sampled one is closed unreviewed; a held crawl answer goes to the next reviewer.

    Example: fmstack review skip 42
    """
    _decide(item_id, "skip", reviewer, as_json)


@review_app.command("assign")
def assign(
    item_id: int = ITEM,
    assignee: str = typer.Argument(None, help="The reviewer (omit to unassign)."),
    as_json: bool = JSON,
) -> None:
    """Assign a pending item to one reviewer: it comes first in their `review next`, and to no one else.

    Example: fmstack review assign 42 alice
    """
    from fmstack.app.review.queue import assign as assign_item
    from fmstack.app.review.queue import item_dict

    with store().begin() as session:
        result = item_dict(assign_item(session, item_id, assignee))
    if as_json:
        print_json(result)
    else:
        console.print(f"review {item_id}: assigned to {result['assignee'] or 'anyone'}")


# ---------- what reviews feed ----------


@suite_app.command("from-reviews")
def suite_from_reviews(
    app_name: str = typer.Argument(..., metavar="APP"),
    out: Path = typer.Option(..., "--out", "-o", help="Suite file to write (YAML)."),
    name: str = typer.Option(None, "--name", help="Suite name (default: reviews-APP)."),
) -> None:
    """Write an eval suite of the app's approved and edited answers: the reference is what a reviewer accepted.

    Example: fmstack eval suite from-reviews shop-bot -o suite.yaml
    """
    from fmstack.app.review.suite import suite_from_reviews as export

    with store()() as session:
        result = export(session, app_name, out, name)
    skipped = ", ".join(f"{n} {why}" for why, n in result.skipped.items())
    console.print(f"wrote {result.cases} cases to {out}" + (f" (left out: {skipped})" if skipped else ""))


def train_judge(
    app_name: str = typer.Argument(..., metavar="APP"),
    out: Path = typer.Option(None, "--out", help="Checkpoint folder (default: FMSTACK_HOME/judges/APP)."),
    held_out: float = typer.Option(0.25, "--held-out", help="Share of the reviews kept to measure both judges."),
    epochs: float = typer.Option(5.0, "--epochs", help="Passes over the training reviews."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
    as_json: bool = JSON,
) -> None:
    """Train a judge on an app's reviews (MiniLM classifier: approved vs edited or rejected), measure its Cohen's
    kappa with the reviewers on held-out reviews beside the generic judge's, and have the policy use the better one.

    Example: fmstack train judge shop-bot
    """
    from fmstack.app.review.judge import train_judge as train_it
    from fmstack.gateway import Gateway
    from fmstack.model.train.classify import load_classifier, train_classifier
    from fmstack.model.train.configs import ClassifyConfig
    from fmstack.model.train.trainer_progress import RichProgress

    if not 0 < held_out < 1:
        raise FmstackError(f"--held-out {held_out}: must be between 0 and 1, e.g. 0.25.")
    settings = get_settings()
    checkpoint = (out or settings.home / "judges" / app_name).expanduser().resolve()
    config = ClassifyConfig(epochs=epochs, max_length=256)

    def train(data: Path, folder: Path) -> dict:
        return train_classifier(data, folder, settings, config, force=force, callbacks=[RichProgress(console)])

    gateway = Gateway.open(settings)
    try:
        result = train_it(gateway, app_name, checkpoint, train=train, load=load_classifier, held_out=held_out)
    finally:
        gateway.close()
    if as_json:
        print_json(result)
        return
    table = Table("judge", "held-out reviews", "Cohen's κ", "accuracy", "judge errors")
    for judge, agreement in ((f"trained ({checkpoint})", result.trained), (result.generic_judge, result.generic)):
        if agreement is not None:
            table.add_row(
                judge or "stored scores",
                str(agreement["n"]),
                _num(agreement["kappa"]),
                _num(agreement["accuracy"]),
                str(agreement["judge_errors"]),
            )
    console.print(f"{result.train_examples} reviews to train on, {result.held_out} held out")
    console.print(table)
    console.print(f"the policy of {app_name} now uses: [cyan]{result.used or 'no judge'}[/]")
