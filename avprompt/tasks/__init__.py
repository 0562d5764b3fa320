"""Task registry: one ``Task`` object per task, each in its own file, found by scanning.

A task used to be spread over half a dozen tables (levels, datasets, default tasks, metric
validity, class counts); now every question about a task ("which dataset?", "segment level?",
"multi-label?", "primary metric?", "in bench's defaults?") is answered by its ``Task`` here, so
adding a task is adding one file.

Discovery imports every module in this folder (``avprompt/tasks/*.py``), the ``avprompt.tasks``
entry-point group (a user's own package), and every ``*.py`` in the folders of
``AVPROMPT_TASKS_PATH`` (os.pathsep-separated), exactly as ``avprompt.registry`` finds methods.
Each file calls ``register_task(Task(...))`` at module level. A file that fails to import is an
error naming its path; a duplicate task name is an error naming both files.

This package imports no torch and nothing heavy: ``avprompt --help``, ``avprompt tasks`` and the
report read it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str                 # "ave", "ave-cls", ...
    dataset: str              # dataset folder in the data root: "ave" | "llp" | "vggsound40k" | "vggsound"
    level: str                # "segment" | "video"
    protocol: str             # "few-shot" | "pretrain" | "supervised": which commands run it
    description: str          # one line for `avprompt tasks` / docs
    multi_label: bool = False         # video labels are sets (LLP): per-class AP views etc.
    single_label_shots: bool = False  # few-shot training clips must carry exactly one video label
    metrics: tuple[str, ...] = ()     # metric names the evaluator reports for this task
    primary: str = ""                 # primary metric under the standard protocol
    reference_primary: str = ""       # under the reference-compatible protocol ("" = same as primary)
    reference_classes: int = 0        # the real dataset's class count (parameter estimates)
    default_for_dataset: bool = False # the task `data stats`/the CLI use when only a dataset is named
    default_bench: bool = False       # in `avprompt bench`'s default --tasks
    zeroshot_target: bool = False     # in `avprompt zeroshot`'s default --targets
    head: str = ""                    # supervised tasks: the default task head key
    source: str = "clips"             # supervised tasks: how examples are read, batched and scored
                                      # (avprompt.supervised.sources: clips | avs | avqa)
    num_segments: int = 10

    @property
    def segment_level(self) -> bool:
        return self.level == "segment"

    @property
    def few_shot(self) -> bool:
        """Whether the few-shot commands (bench, zeroshot, splits, few-shot metrics) run it."""
        return self.protocol in FEW_SHOT_PROTOCOLS

    def primary_metric(self, protocol: str = "standard") -> str:
        """The primary metric under an evaluation protocol ("standard" or reference-compatible)."""
        if protocol == "standard":
            return self.primary
        return self.reference_primary or self.primary


LEVELS = ("segment", "video")
PROTOCOLS = ("few-shot", "pretrain", "supervised")
#: protocols the few-shot code paths (splits, few-shot metrics, bench, zeroshot) accept
FEW_SHOT_PROTOCOLS = ("few-shot", "pretrain")
#: dataset folders a task may name (``avprompt.engine.workspace`` knows how to open each)
DATASETS = ("ave", "llp", "vggsound40k", "vggsound", "avsbench", "musicavqa")
ENV_PATH = "AVPROMPT_TASKS_PATH"

_TASKS: dict[str, Task] = {}
_FILES: dict[str, str] = {}  # task name -> the file that registered it (for duplicate errors)
_DISCOVERED = False


class TaskError(ValueError):
    """A bad task file or a bad task name: one line, shown as-is by the CLI (a ValueError)."""


def _caller_file(depth: int = 2) -> str:
    frame = sys._getframe(depth)
    return str(frame.f_globals.get("__file__") or frame.f_globals.get("__name__", "?"))


def register_task(task: Task) -> Task:
    """Register ``task`` (call at module level of a task file); returns it.

    Checks the fields a typo would silently break (level, protocol, primary among metrics) so a
    bad file fails at import, naming its path. Registering the same name again from the same
    file (a re-import) replaces it; from another file it is an error naming both files."""
    where = _caller_file()
    if not isinstance(task, Task):
        raise TaskError(f"{where}: register_task needs a Task, got {type(task).__name__}")
    problems = []
    if task.level not in LEVELS:
        problems.append(f"level {task.level!r} (use {' | '.join(LEVELS)})")
    if task.protocol not in PROTOCOLS:
        problems.append(f"protocol {task.protocol!r} (use {' | '.join(PROTOCOLS)})")
    if task.metrics and task.primary not in task.metrics:
        problems.append(f"primary {task.primary!r} is not among its metrics {list(task.metrics)}")
    if task.reference_primary and task.reference_primary not in task.metrics:
        problems.append(f"reference_primary {task.reference_primary!r} is not among its metrics")
    if problems:
        raise TaskError(f"task {task.name!r} in {where}: bad " + "; ".join(problems))
    prev = _FILES.get(task.name)
    if prev is not None and os.path.realpath(prev) != os.path.realpath(where):
        raise TaskError(f"duplicate task name {task.name!r}: {prev} and {where}; rename one")
    _TASKS[task.name] = task
    _FILES[task.name] = where
    return task


def _unregister(name: str) -> None:
    """Drop a task (tests that register throw-away tasks clean up with it)."""
    _TASKS.pop(name, None)
    _FILES.pop(name, None)


def discover(force: bool = False) -> dict[str, Task]:
    """All registered tasks by name (scans once; ``force`` rescans, e.g. after setting the env)."""
    global _DISCOVERED
    if _DISCOVERED and not force:
        return _TASKS
    from avprompt.plugins import scan
    scan("task", __name__, "avprompt.tasks", ENV_PATH, error=TaskError)
    _DISCOVERED = True
    return _TASKS


def list_tasks(protocol: str | None = None) -> list[Task]:
    """Registered tasks in registration order (built-ins first, in file order), optionally only
    those of one protocol."""
    return [t for t in discover().values() if protocol is None or t.protocol == protocol]


def task_names(protocol: str | None = None) -> list[str]:
    return [t.name for t in list_tasks(protocol)]


def get_task(name: str | Task) -> Task:
    """The ``Task`` named ``name`` (a ``Task`` passes through); one-line error when unknown."""
    if isinstance(name, Task):
        return name
    reg = discover()
    if name not in reg:
        raise TaskError(f"unknown task {name!r}; use one of {', '.join(reg)}")
    return reg[name]


def few_shot_task(name: str | Task) -> Task:
    """``get_task`` for the few-shot code paths: a supervised task is a one-line error saying
    which command runs it."""
    task = get_task(name)
    if not task.few_shot:
        raise TaskError(f"task {task.name!r} is a {task.protocol} task: "
                        f"run it with `avprompt train --task {task.name}`")
    return task


def default_task(dataset: str, fallback: str | None = None) -> Task | None:
    """The task used when only ``dataset`` is named (``default_for_dataset``), else ``fallback``."""
    for t in discover().values():
        if t.dataset == dataset and t.default_for_dataset:
            return t
    return get_task(fallback) if fallback else None


def tasks_of(dataset: str, protocol: str | None = None) -> list[Task]:
    """The tasks read from ``dataset``, in registration order."""
    return [t for t in list_tasks(protocol) if t.dataset == dataset]
