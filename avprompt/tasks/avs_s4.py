"""Supervised audio-visual segmentation, AVSBench-object S4 (one sounding source per video)."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="avs-s4", dataset="avsbench", level="segment", protocol="supervised",
    description="AVSBench-object S4 segmentation (TPAVI-style head): mask of the sounding object in each "
                "of 5 frames, mIoU over all test frames",
    metrics=("miou", "fscore"), primary="miou", reference_classes=23, head="tpavi", source="avs",
    num_segments=5,
))
