"""Progress bars (rich) shared by training, sampling and evaluation."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Bar:
    """Handle to one task of a rich progress display; ``advance(loss=0.1)`` shows fields.

    Without a terminal (logs of background runs) it prints a plain line every 30 s instead.
    """

    def __init__(
        self,
        progress: Progress | None,
        task: TaskID | None,
        plain: tuple[str, int, int] | None = None,
    ) -> None:
        self._progress, self._task = progress, task
        self._plain = plain
        self._done = plain[2] if plain else 0
        self._last = time.monotonic()
        self._start = self._last

    def advance(self, n: int = 1, /, **fields: float | str) -> None:
        info = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
        )
        if self._plain is not None:
            self._done += n
            desc, total, _ = self._plain
            now = time.monotonic()
            if now - self._last >= 30 or self._done >= total:
                self._last = now
                print(
                    f"{desc}: {self._done}/{total} [{now - self._start:.0f}s] {info}",
                    file=sys.stderr,
                    flush=True,
                )
            return
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, advance=n, info=info)


def _enabled() -> bool:
    return os.environ.get("UNSEE_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(total: int, description: str, completed: int = 0) -> Iterator[Bar]:
    """A progress bar on stderr (disabled by ``UNSEE_PROGRESS=0``)."""
    if not _enabled():
        yield Bar(None, None)
        return
    if not sys.stderr.isatty():
        yield Bar(None, None, plain=(description, total, completed))
        return
    from rich.console import Console

    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        yield Bar(progress, task)
