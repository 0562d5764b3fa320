"""Supervised audio-visual question answering on MUSIC-AVQA (ST-AVQA-style head), scored per
question; metric names are documented in ``avprompt.supervised.sources.avqa``."""
from avprompt.tasks import Task, register_task

register_task(Task(
    name="avqa", dataset="musicavqa", level="video", protocol="supervised",
    description="supervised MUSIC-AVQA question answering (ST-AVQA-style head): closed answer set, "
                "accuracy overall, per modality group and per question type",
    metrics=("acc", "acc_audio", "acc_visual", "acc_av",
             "acc_audio_counting", "acc_audio_comparative", "acc_visual_counting", "acc_visual_location",
             "acc_av_existential", "acc_av_counting", "acc_av_location", "acc_av_comparative",
             "acc_av_temporal"),
    primary="acc", head="st-avqa", source="avqa", num_segments=10, reference_classes=42,
))
