"""Supervised AVE localisation: the shared encoder + a task head on AVE's whole training set."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="ave-sup", dataset="ave", level="segment", protocol="supervised",
    description="supervised AVE localisation (CMBS-style head): 28 events + background per segment, "
                "accuracy over all test segments",
    metrics=("segment_acc",), primary="segment_acc", reference_classes=28, head="cmbs",
))
