"""Tasks: how a dataset's records become training targets and which outputs a method produces.

What each task is (level, dataset, metrics, shot rule) is its ``Task`` in ``avprompt.tasks``
(one file per task, ``avprompt tasks`` lists them); this module holds the label rules they
share, so the few-shot code paths read one definition.

=============  =======  ==========================================================================
task           level    targets
=============  =======  ==========================================================================
ave            segment  29 outputs (28 classes + background, last); accuracy over test segments
ave-cls        video    28 classes; video label = class of the first event segment
llp-cls        video    25 classes; multi-label videos: ``label`` = lowest-index label (the
                        reference rule), all labels in ``video_labels``; shots come only from
                        single-label videos (``Task.single_label_shots``)
vggsound40k    video    141-class pre-training (label = first event segment's class)
vggsound       video    VGG-Sound classification (one label per clip)
=============  =======  ==========================================================================

The tasks are defined by level and label rule, not by dataset, so any of them runs on a
manifest (``manifest:FILE``) with the manifest's classes.

Label rule (video-level ``label``): the class of the first event segment when the record has
segment labels with an event, else the lowest class index among ``video_labels``; -1 when the
record has no label at all (unlabelled clips of a manifest).
"""
from __future__ import annotations

from avprompt.data.records import ClipRecord, DatasetIndex
from avprompt.task import TaskSpec
from avprompt.tasks import Task, few_shot_task


def check_task(task: str | Task) -> str:
    """The name of a task the few-shot code paths run (one-line error for an unknown or a
    supervised task)."""
    return few_shot_task(task).name


def task_spec(task: str | Task, index: DatasetIndex) -> TaskSpec:
    """The ``TaskSpec`` of ``task`` over ``index``'s classes (dataset order)."""
    t = few_shot_task(task)
    return TaskSpec(name=t.name, level=t.level, class_names=tuple(index.classes))


def primary_label(record: ClipRecord) -> int:
    """Video-level class of a record (see the module docstring's label rule)."""
    for s in record.segment_labels:
        if s >= 0:
            return s
    return min(record.video_labels) if record.video_labels else -1


def targets(task: TaskSpec | str, record: ClipRecord, num_classes: int | None = None) -> dict:
    """Targets of one record.

    Returns ``segment_labels`` (length T, background = number of classes), ``label`` (int) and
    ``video_labels`` (sorted class indices). ``num_classes`` is needed only when ``task`` is a
    task name rather than a ``TaskSpec``.
    """
    if isinstance(task, TaskSpec):
        background = task.background_index
    else:
        check_task(task)
        if num_classes is None:
            raise ValueError("targets(task_name, record) needs num_classes= (or pass a TaskSpec)")
        background = num_classes
    return {
        "segment_labels": [background if s < 0 else s for s in record.segment_labels],
        "label": primary_label(record),
        "video_labels": sorted(record.video_labels),
    }


def shot_eligible(task: str | Task, record: ClipRecord) -> bool:
    """Whether a train record may be drawn as a few-shot example of ``primary_label``."""
    if primary_label(record) < 0:
        return False
    if few_shot_task(task).single_label_shots:
        return len(record.video_labels) == 1
    return True
