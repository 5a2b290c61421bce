"""`fmstack loop …`: the closed loop in one command (`run`), and the record of past runs (`list`, `show`).

Exit codes of `loop run`: 0 when a candidate serves its A/B share; 1 when the loop stopped on its own terms (a
failed gate, with the scores; too little data); 2 for anything to fix (an unknown app or base model, a config
field, with file:line).
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import typer

from fmstack.cli.common import JSON, Col, command_group, console, err, print_json, show_rows, store
from fmstack.core.config import get_settings

loop_app = command_group(
    "The closed loop: traces, feedback and reviews -> fine-tuned candidate -> eval gate -> GGUF -> A/B share.\n\n"
    "Example: fmstack loop run shop-bot --base smollm2-135m-instruct --config loop.yaml",
    no_args_is_help=True,
)

RUN_COLUMNS = (
    Col("#", lambda r: str(r.id)),
    Col("app", lambda r: r.app, no_wrap=True),
    Col("started", lambda r: f"{r.started_at:%Y-%m-%d %H:%M}", no_wrap=True),
    Col("status", lambda r: r.status),
    Col("step", lambda r: r.step),
    Col("candidate", lambda r: r.candidate or "-"),
    Col("data since", lambda r: f"{r.since:%Y-%m-%d %H:%M}" if r.since else "start"),
    Col("why it stopped", lambda r: r.reason or "-"),
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: the run's row is marked interrupted at its step instead of staying `running`."""
    raise KeyboardInterrupt


@loop_app.command("run")
def run(
    app_name: str = typer.Argument(..., metavar="APP", help="The app (its X-Fmstack-App header)."),
    base: str = typer.Option(None, "--base", help="Registry model to fine-tune (default: `base:` in --config)."),
    config: Path = typer.Option(None, "--config", "-c", help="Loop settings, YAML (every field optional)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the app's interrupted or failed loop."),
    as_json: bool = JSON,
) -> None:
    """Run the loop for an app: its traces, feedback and reviews since the last completed loop become SFT/DPO data;
    the base is fine-tuned (LoRA), exported to GGUF, gated against the production variant on held-out reviewed
    answers, registered, and given a small share of the A/B route. Each step says what it did; a failed gate stops
    the loop with the scores (exit 1).

    Example: fmstack loop run shop-bot --base smollm2-135m-instruct --config loop.yaml
    """
    from fmstack.loop import load_loop_config, run_loop

    loaded = load_loop_config(config)
    settings = get_settings()

    def report(step: str, message: str) -> None:
        target = err if as_json else console  # with --json, stdout holds the JSON alone
        target.print(f"[bold]{step:<9}[/] {message}", soft_wrap=True, highlight=False)

    signal.signal(signal.SIGTERM, _interrupt)
    result = run_loop(app_name, base, loaded, settings, store(settings), report, resume)
    if as_json:
        print_json({"run": result.run, "status": result.status, "reason": result.reason, "steps": result.outputs})
    elif result.status == "done":
        ab = result.outputs["ab"]
        console.print(f"loop {result.run.id} done: [cyan]{result.run.candidate}[/] serves route {ab['route']} "
                      f"({ab['split']}); compare with `fmstack ab report {ab['route']}`", soft_wrap=True)  # fmt: skip
    if result.status != "done":
        raise typer.Exit(1)


@loop_app.command("list")
def list_runs(
    app_name: str = typer.Argument(None, metavar="[APP]", help="Only this app's runs."),
    limit: int = typer.Option(20, help="How many, newest first."),
    as_json: bool = JSON,
) -> None:
    """Past loop runs, newest first: how each ended, at which step and why.

    Example: fmstack loop list shop-bot --json
    """
    from fmstack.loop import LoopRuns

    show_rows(LoopRuns(store()).list(app_name, limit), RUN_COLUMNS, as_json)


@loop_app.command("show")
def show(
    run_id: int = typer.Argument(..., help="The run's number (`fmstack loop list`)."),
    as_json: bool = JSON,
) -> None:
    """One loop run: its config, data window and what each step produced (the gate's scores among them).

    Example: fmstack loop show 3
    """
    from fmstack.loop import LoopRuns

    info = LoopRuns(store()).get(run_id)
    if as_json:
        print_json(info)
        return
    show_rows([info], RUN_COLUMNS, False)
    for step, output in info.steps.items():
        console.print(f"[bold]{step}[/]: " + ", ".join(f"{k}={v}" for k, v in output.items() if k != "scores"),
                      soft_wrap=True, highlight=False)  # fmt: skip
        for score in output.get("scores", []):
            console.print(f"    {score}", soft_wrap=True, highlight=False)
