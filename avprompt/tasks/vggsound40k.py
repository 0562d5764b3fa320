"""VGGSound-40K: the 141-class audio-visual pre-training set (label = first event's class)."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="vggsound40k", dataset="vggsound40k", level="video", protocol="pretrain",
    description="VGGSound-40K pre-training: 141 classes, label = first event segment's class",
    metrics=("video_acc",), primary="video_acc", reference_classes=141,
    default_for_dataset=True,
))
