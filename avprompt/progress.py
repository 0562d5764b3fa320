"""One progress bar for every long command: tqdm on a terminal, plain periodic lines elsewhere.

In a log file (stderr not a terminal) tqdm's carriage returns and escape codes turn into one
unreadable line; there ``progress`` prints instead a plain line at most every ``every`` seconds
(``AVPROMPT_PROGRESS_EVERY``, default 30) with the count, the rate, elapsed time and the ETA, and
one final count line when the bar closes::

    cells: 12/480 cell (2%), 1.4 min elapsed, ETA 54.6 min  [ave coop@v K=4 s=2]
    cells: 480/480 cell in 31.2 min

Inner bars (``leave=False``, e.g. the epochs of one cell) stay silent in a log: the outer bar says
enough there. Items of unequal cost (a sweep starts its longest cells first) give ``work``: the
estimated cost of each, so the share done and the ETA follow the work, not the count.
"""
from __future__ import annotations

import os
import sys
import time


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class _Bar:
    """What both bars share: iteration (one ``update`` per item, with its ``work`` weight), the
    context manager and the postfix. Subclasses implement ``update``, ``close`` and ``_show``."""

    iterable = None
    weights: list[float] | None = None
    postfix = ""

    def __iter__(self):
        try:
            for i, item in enumerate(self.iterable):
                yield item
                self.update(1, work=self.weights[i] if self.weights else None)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        self._show()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in items.items()))

    def _show(self) -> None:
        pass


class PlainProgress(_Bar):
    """The subset of tqdm's interface the commands use (iterate, update, set_postfix[_str], close,
    ``n``, context manager), writing plain lines."""

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", unit: str = "it",
                 leave: bool = True, every: float | None = None, stream=None, clock=time.monotonic,
                 work: list[float] | None = None):
        self.iterable = iterable
        self.weights = list(work) if work is not None else None
        self.work_total = float(sum(self.weights)) if self.weights else None
        self.work_done = 0.0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.every = float(os.environ.get("AVPROMPT_PROGRESS_EVERY", 30)) if every is None else every
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.n = 0
        self.start = self._last = clock()
        self.closed = False

    def update(self, n: int = 1, work: float | None = None) -> None:
        """``n`` more items done; ``work``: their estimated cost (see ``progress``)."""
        self.n += n
        self.work_done += float(work or 0.0)
        now = self.clock()
        if self.leave and now - self._last >= self.every and (self.total is None or self.n < self.total):
            self._last = now
            self._write(self.status_line(now))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave:
            self._write(self.final_line())

    # lines ----------------------------------------------------------------------------------
    def status_line(self, now: float | None = None) -> str:
        elapsed = (self.clock() if now is None else now) - self.start
        if self.work_total and self.total:
            share = self.work_done / self.work_total
            count = f"{self.n}/{self.total} {self.unit} ({100 * share:.0f}% of the estimated work)"
            eta_s = f", ETA {_minutes(elapsed * (1 - share) / share)}" if share > 0 else ""
        elif self.total:
            eta = elapsed / self.n * (self.total - self.n) if self.n else float("nan")
            count = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
            eta_s = f", ETA {_minutes(eta)}" if self.n else ""
        else:
            count, eta_s = f"{self.n} {self.unit}", ""
        tail = f"  [{self.postfix}]" if self.postfix else ""
        return f"{self.desc}: {count}, {_minutes(elapsed)} elapsed{eta_s}{tail}"

    def final_line(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        return f"{self.desc}: {self.n}{total} {self.unit} in {_minutes(self.clock() - self.start)}"

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class WeightedBar(_Bar):
    """tqdm on a terminal for items of unequal cost: the bar and its ETA run over the estimated
    work; the item count is shown beside it. Same interface as ``PlainProgress``."""

    def __init__(self, iterable, total, desc, unit, leave, stream, work):
        from tqdm import tqdm
        self.iterable, self.weights, self.total, self.unit = iterable, list(work), total, unit
        self.n = 0
        self.bar = tqdm(total=float(sum(self.weights)), desc=desc, leave=leave, file=stream,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
        self._show()

    def _show(self):
        self.bar.set_postfix_str(f"{self.n}/{self.total} {self.unit}" + (f", {self.postfix}" if self.postfix else ""))

    def update(self, n: int = 1, work: float | None = None) -> None:
        self.n += n
        self._show()
        self.bar.update(float(work or 0.0))

    def close(self) -> None:
        self.bar.close()


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = True, disable: bool = False, stream=None, work: list[float] | None = None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a ``PlainProgress``.

    ``work``: the estimated cost of each item, in the order they are iterated (with an iterable),
    or given to ``update(n, work=...)`` as items finish; share done and ETA then follow it."""
    stream = stream if stream is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if disable:
        from tqdm import tqdm
        return tqdm(iterable, total=total, disable=True)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        if work is not None and sum(work) > 0:
            return WeightedBar(iterable, total, desc, unit, leave, stream, work)
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, leave=leave, stream=stream, work=work)
