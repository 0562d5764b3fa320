"""Clip records: the one shape every dataset reader produces and every task consumes.

A reader (AVE, LLP, VGG-Sound, manifest, SynthAV) turns annotation files into a ``DatasetIndex``:
ordered class names plus one ``ClipRecord`` per (video, split) row. Tasks, few-shot splits, the
preparation cache and the manifest writer only ever see these records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

NUM_SEGMENTS = 10  # every supported dataset uses 10 one-second segments per clip


@dataclass
class ClipRecord:
    """One clip of one split.

    clip_id: unique key within the dataset index (a video id, suffixed when the same video has
        several rows, e.g. AVE videos listed in two splits).
    video_id: the source video id (file stem of the media).
    media: path of the mp4 (may not exist: annotation-only use is supported).
    split: "train" | "val" | "test".
    segment_labels: length-10 list; class index of the event in segment t, or -1 for background.
    video_labels: sorted class indices present in the clip (weak labels).
    audio_segments / visual_segments: optional dense per-modality labels, one list of class indices
        per segment (LLP evaluation files); None when the dataset has none.
    """

    clip_id: str
    video_id: str
    media: str
    split: str
    segment_labels: list[int] = field(default_factory=lambda: [-1] * NUM_SEGMENTS)
    video_labels: list[int] = field(default_factory=list)
    audio_segments: list[list[int]] | None = None
    visual_segments: list[list[int]] | None = None


@dataclass
class DatasetIndex:
    """A dataset's classes (raw names, in the dataset's canonical order) and clip records."""

    name: str
    root: Path
    classes: list[str]
    records: list[ClipRecord]
    #: quirk name -> number of annotation rows it affected (each reader documents its rules).
    quirks: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[ClipRecord]:
        return [r for r in self.records if r.split == name]
