"""Task descriptions shared by methods, the training loop and the evaluator.

Every method produces per-segment logits ``(B, T, K)``; the task says how they are read:
segment-level tasks (``ave``) score each of the T segments against the event classes plus a
background class (last index); video-level tasks (``ave-cls``, ``llp-cls``, pre-training) average
the segment logits over T (as the DG-SCT reference does) and have no background class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BACKGROUND = "background"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    level: Literal["segment", "video"]
    class_names: tuple[str, ...]  # raw event class names, dataset order, no background
    num_segments: int = 10

    @property
    def has_background(self) -> bool:
        return self.level == "segment"

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) + int(self.has_background)

    @property
    def background_index(self) -> int:
        """Index of the background logit (segment tasks only)."""
        return len(self.class_names)

    @property
    def prompt_names(self) -> list[str]:
        """Names fed to the text towers, one per output: underscores become spaces."""
        names = [c.replace("_", " ").strip() for c in self.class_names]
        return names + ([BACKGROUND] if self.has_background else [])
