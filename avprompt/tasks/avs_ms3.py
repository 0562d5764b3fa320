"""Supervised audio-visual segmentation, AVSBench-object MS3 (several sources, some silent)."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="avs-ms3", dataset="avsbench", level="segment", protocol="supervised",
    description="AVSBench-object MS3 segmentation (TPAVI-style head): mask of every object sounding in each "
                "of 5 frames, mIoU over all test frames",
    metrics=("miou", "fscore"), primary="miou", reference_classes=0, head="tpavi", source="avs",
    num_segments=5,
))
