"""Progress reporting between jitted chunks: a rich bar if rich is installed, else a text line.

rich is an optional dependency; without it a single `\\r`-rewritten line goes
to stderr. Nothing here runs inside `jit`.
"""

from __future__ import annotations

import sys


class _Silent:
    def update(self, step: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Text:
    def __init__(self, total: int, stream):
        self.total, self.stream = total, stream

    def update(self, step: int, loss: float) -> None:
        self.stream.write(f"\rfit: step {step}/{self.total}  loss {loss:.6g}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class _Rich:
    def __init__(self, total: int, progress_module, console_module):
        columns = (
            progress_module.TextColumn("fit"),
            progress_module.BarColumn(),
            progress_module.MofNCompleteColumn(),
            progress_module.TextColumn("loss {task.fields[loss]}"),
            progress_module.TimeElapsedColumn(),
        )
        console = console_module.Console(file=sys.stderr)
        self.bar = progress_module.Progress(*columns, console=console, transient=False)
        self.task = self.bar.add_task("fit", total=total, loss="-")
        self.bar.start()

    def update(self, step: int, loss: float) -> None:
        self.bar.update(self.task, completed=step, loss=f"{loss:.6g}")

    def close(self) -> None:
        self.bar.stop()


def reporter(enabled: bool, total: int, *, use_rich: bool = True):
    """An object with `update(step, loss)` and `close()`."""
    if not enabled:
        return _Silent()
    if use_rich:
        try:
            import rich.console
            import rich.progress
        except ImportError:
            pass
        else:
            return _Rich(total, rich.progress, rich.console)
    return _Text(total, sys.stderr)
