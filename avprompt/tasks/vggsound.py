"""VGG-Sound classification: one label per clip."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="vggsound", dataset="vggsound", level="video", protocol="few-shot",
    description="VGG-Sound classification: one label per clip, video accuracy",
    metrics=("video_acc",), primary="video_acc", reference_classes=309,
    default_for_dataset=True,
))
