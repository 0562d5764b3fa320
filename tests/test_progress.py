"""Progress on long commands: tqdm on a terminal; in a log, plain periodic lines with the count,
elapsed time and ETA, and one final count line (no carriage returns or escape codes)."""
from __future__ import annotations

import io

from tqdm import tqdm

from avprompt.progress import PlainProgress, progress


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_period_with_eta_and_a_final_count():
    clock, log = _Clock(), io.StringIO()
    bar = PlainProgress(range(10), desc="cells", unit="cell", every=30, stream=log, clock=clock)
    seen = []
    for i in bar:
        seen.append(i)
        clock.t += 20  # 20 s per item: a line after items 2, 4 (60 s elapsed), ...
        if i == 3:
            bar.set_postfix_str("ave coop@v K=4 s=2")
    lines = log.getvalue().splitlines()
    assert seen == list(range(10))
    assert lines[0] == "cells: 2/10 cell (20%), 40 s elapsed, ETA 2.7 min"
    assert lines[1] == "cells: 4/10 cell (40%), 80 s elapsed, ETA 2.0 min  [ave coop@v K=4 s=2]"
    assert lines[-1] == "cells: 10/10 cell in 3.3 min"
    assert len(lines) == 5 and "\r" not in log.getvalue() and "\x1b" not in log.getvalue()


def test_inner_bars_are_silent_in_a_log_and_close_once():
    log = io.StringIO()
    with PlainProgress(total=3, desc="  epochs", leave=False, every=0, stream=log) as bar:
        bar.update(3)
        bar.set_postfix(loss="0.1", val="50.0")
    bar.close()
    assert log.getvalue() == ""
    log2 = io.StringIO()
    with PlainProgress(total=2, desc="x", every=1e9, stream=log2) as bar:
        bar.update(2)
    assert log2.getvalue().splitlines() == ["x: 2/2 it in 0 s"]


def test_progress_is_tqdm_on_a_terminal_and_plain_in_a_file():
    assert isinstance(progress(total=1, stream=_Terminal()), tqdm)
    assert isinstance(progress(total=1, stream=io.StringIO()), PlainProgress)


def test_eta_follows_the_estimated_work_when_items_differ_in_cost():
    """A sweep starts its longest cells first: a count-based ETA would say hours after the first
    long cell; with each item's estimated cost the share and ETA follow the work."""
    clock, log = _Clock(), io.StringIO()
    bar = PlainProgress(total=4, desc="cells", unit="cell", every=0, stream=log, clock=clock, work=[10, 1, 1, 1])
    clock.t = 100.0
    bar.update(1, work=10)  # the long cell: 10 of 13 units in 100 s
    assert log.getvalue().splitlines()[0] == "cells: 1/4 cell (77% of the estimated work), 1.7 min elapsed, ETA 30 s"
    for _ in range(3):
        clock.t += 10
        bar.update(1, work=1)
    bar.close()
    assert log.getvalue().splitlines()[-1] == "cells: 4/4 cell in 2.2 min"


def test_a_terminal_bar_for_weighted_items_counts_items_and_runs_over_the_work():
    term = _Terminal()
    bar = progress(["a", "b", "c"], desc="cells", unit="cell", stream=term, work=[5.0, 1.0, 1.0])
    assert list(bar) == ["a", "b", "c"]
    assert bar.n == 3 and bar.bar.n == 7.0 and "3/3 cell" in term.getvalue()
