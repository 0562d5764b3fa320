"""AVE event localisation: per-segment classification over 28 events + background."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="ave", dataset="ave", level="segment", protocol="few-shot",
    description="AVE event localisation: 28 events + background per 1-s segment, segment accuracy",
    metrics=("segment_acc",), primary="segment_acc", reference_classes=28,
    default_for_dataset=True, default_bench=True, zeroshot_target=True,
))
