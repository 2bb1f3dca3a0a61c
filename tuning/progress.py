"""Progress of a study on a stream (stderr by default): this invocation's trials done, pruned, failed, and the
best so far.

On a terminal it is a live bar (rich). Elsewhere (a log file, a pipe, ``civicml tune --json`` read by a
script) it is one plain line each time a trial ends, so that long studies are never silent. The bar never
takes over ``sys.stdout`` or ``sys.stderr``: what libraries write meanwhile stays where the caller sent it
(the CLI keeps it for the debug log), and stdout stays the command's own.
"""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, title: str, stream: TextIO | None = None):
        self._stream = stream if stream is not None else sys.stderr
        self._total, self._title = total, title
        self._last: tuple | None = None
        self._progress = None
        if _is_terminal(self._stream):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=False,
                                      console=Console(file=self._stream, highlight=False),
                                      redirect_stdout=False, redirect_stderr=False)
            self._task = self._progress.add_task(title, total=total, status="")

    def start(self) -> None:
        if self._progress is not None:
            self._progress.start()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def show(self, counts: dict[str, int], best: str) -> None:
        """``counts`` as :func:`tuning.worker.progress` gives them; ``best`` a short text."""
        extra = f", pruned {counts['pruned']}" + (f", failed {counts['failed']}" if counts["failed"] else "")
        running = f", running {counts['running']}" if counts.get("running") else ""
        if self._progress is not None:
            self._progress.update(self._task, completed=counts["done"], status=f"{best}{extra}{running}")
            return
        key = (counts["done"], counts["pruned"], counts["failed"], best)
        if key == self._last:
            return
        self._last = key
        self._stream.write(f"{self._title}: {counts['done']}/{self._total} trials{extra}; {best}\n")
        self._stream.flush()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
