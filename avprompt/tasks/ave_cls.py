"""AVE video classification: one label per video, the class of its first event segment."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="ave-cls", dataset="ave", level="video", protocol="few-shot",
    description="AVE video classification: 28 classes, label = first event segment's class",
    metrics=("video_acc",), primary="video_acc", reference_classes=28,
    default_bench=True, zeroshot_target=True,
))
