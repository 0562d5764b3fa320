"""Weakly supervised audio-visual video parsing on LLP: trained on video-level labels, scored on the
dense audio and visual annotations of the test videos (segment- and event-level F1)."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="avvp", dataset="llp", level="segment", protocol="supervised", multi_label=True,
    description="weakly supervised AVVP (MMIL/HAN-style head): audio, visual and audio-visual events "
                "per segment from video-level labels; segment-level Type@AV F1",
    metrics=("seg_a", "seg_v", "seg_av", "seg_type", "seg_event",
             "evt_a", "evt_v", "evt_av", "evt_type", "evt_event"),
    primary="seg_type", reference_classes=25, head="mmil",
))
