"""A rich progress bar for transformers' `Trainer` (and TRL's trainers, which are Trainers).

The Trainer's own tqdm bar is turned off (`disable_tqdm=True`) so the terminal shows one fmstack-style bar with the
step count, the latest loss and the time left; on other ranks of a distributed run the bar stays quiet.
"""

from __future__ import annotations

import warnings

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    """Steps, loss and ETA on `console` while a Trainer trains."""

    def __init__(self, console: Console, description: str = "training"):
        self.console = console
        self.description = description
        self._bar: Progress | None = None
        self._task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        columns = (BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"), TimeRemainingColumn())
        self._bar = Progress(self.description, *columns, console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=state.max_steps, loss="")

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._bar is not None and logs and "loss" in logs:
            self._bar.update(self._task, loss=f"loss {logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def quiet_libraries() -> None:
    """Silence the libraries' own bars and notices (weight loading, dataset mapping, deprecations inside TRL):
    the user sees fmstack's bar and summary, and real errors still surface as exceptions."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing\w*` is deprecated", category=FutureWarning)
