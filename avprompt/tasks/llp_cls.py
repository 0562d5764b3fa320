"""LLP video classification: multi-label videos, so the standard primary metric is macro mAP.

``label`` is the lowest-index weak label (the reference rule), which a constant "Speech"
predictor scores over 50 % on; macro mAP over classes with a positive test video is the
standard primary, the reference rule's accuracy the reference-compatible one. Shots come only
from single-label videos, so a shot's label is not a guess.
"""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="llp-cls", dataset="llp", level="video", protocol="few-shot",
    description="LLP video classification: 25 classes, multi-label videos, macro mAP",
    multi_label=True, single_label_shots=True,
    metrics=("video_acc", "single_label_acc", "macro_map", "reference_acc"),
    primary="macro_map", reference_primary="reference_acc", reference_classes=25,
    default_for_dataset=True, default_bench=True, zeroshot_target=True,
))
