"""What ``comfy-dispatch run`` and ``batch`` show while they wait: a rich progress bar on stderr, only on a terminal.

The arithmetic (ETA, durations, the counts line) is plain functions; the bars do nothing when disabled,
so the commands call them the same way whether or not anyone watches.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def eta_seconds(left: int, rate: float | None, api_eta: float | None = None) -> float | None:
    """Seconds until ``left`` more lines are done: the API's estimate when it gave one, else from the rate
    (lines per second) seen so far; None with neither."""
    if left <= 0:
        return 0.0
    if api_eta is not None and api_eta >= 0:
        return api_eta
    if rate is None or rate <= 0:
        return None
    return left / rate


def format_duration(seconds: float | None) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``42s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def counts_line(counts: Mapping[str, int]) -> str:
    """``queued 3 · running 2 · succeeded 10 · failed 1``: the counts of a batch, in the order runs move."""
    order = ("queued", "running", "succeeded", "failed")
    return " · ".join(f"{name} {counts.get(name, 0)}" for name in order)


def _console() -> Console:
    return Console(stderr=True)


class BatchProgress:
    """One bar for a batch file: lines done out of all, the counts by status, the rate and the ETA."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("eta {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=_console(),
            transient=False,
        )
        self._task = self._progress.add_task("batch", total=total, completed=done, counts="", rate="", eta="?")
        self._progress.start()

    def update(self, *, done: int, counts: Mapping[str, int], rate: float | None, eta: float | None) -> None:
        if self._progress is None or self._task is None:
            return
        per_second = f"{rate:.1f}/s" if rate else "-/s"
        self._progress.update(
            self._task, completed=done, counts=counts_line(counts), rate=per_second, eta=format_duration(eta)
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class RunProgress:
    """One bar for one run: its status and its progress (0 to 1, from its progress events)."""

    def __init__(self, run_id: str, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=_console(),
            transient=True,
        )
        self._task = self._progress.add_task(run_id, total=1.0, status="queued")
        self._progress.start()

    @property
    def enabled(self) -> bool:
        return self._progress is not None

    def update(self, *, status: str, progress: float | None = None) -> None:
        if self._progress is None or self._task is None:
            return
        if progress is None:
            self._progress.update(self._task, status=status)
        else:
            self._progress.update(self._task, status=status, completed=max(0.0, min(1.0, progress)))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
