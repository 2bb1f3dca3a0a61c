"""A live progress bar for a study: this invocation's trials done, pruned, failed, and the best so far."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressBar:
    def __init__(self, total: int, title: str):
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=False)
        self._task = self._progress.add_task(title, total=total, status="")

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def show(self, counts: dict[str, int], best: str) -> None:
        """``counts`` as :func:`tuning.worker.progress` gives them; ``best`` a short text."""
        extra = f", pruned {counts['pruned']}" + (f", failed {counts['failed']}" if counts["failed"] else "")
        running = f", running {counts['running']}" if counts.get("running") else ""
        self._progress.update(self._task, completed=counts["done"], status=f"{best}{extra}{running}")
