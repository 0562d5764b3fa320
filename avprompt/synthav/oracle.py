"""Difficulty of the SynthAV event-localisation task, measured from the generator's ground truth.

Each oracle sees one segment through one channel and recognises everything in that channel
perfectly:

- audio-visual: the set of visible classes V_t and of audible classes A_t; the event is V_t & A_t,
  so it is right on every segment (the label is defined this way).
- visual-only: V_t only. It cannot tell the sounding object from a silent one nor a silent event
  object from a sounding one. Its best rule depends only on n = |V_t| (class labels are exchangeable
  by construction): answer background, or guess one of the n visible classes (right with prob. 1/n).
- audio-only: the same with A_t (off-screen sounds play the silent objects' role).
- background: always answer background (the floor).

The decision rule per n is the Bayes rule of the generator's distribution, fitted on a large fresh
sample of ground truth; accuracies are expectations (no random guessing), so they are exact and
deterministic. These are per-segment ceilings: a model that reasons over the whole clip can in
principle do a little better than a unimodal ceiling, never better than the audio-visual one.
"""
from __future__ import annotations

import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from avprompt.synthav.scenes import KINDS, ClipTruth, sample_event_clip

TRUTH_FILE = "ground_truth.json"
_POPULATION = 4000  # clips used to fit the Bayes rules (about 1 s of sampling)


def _observations(clip: ClipTruth, channel: str) -> list[set[int]]:
    return clip.visible_sets() if channel == "visual" else clip.audible_sets()


def _counts(clips: list[ClipTruth], channel: str) -> dict[int, list[float]]:
    """n -> [segments, background segments, event segments] for observation size n."""
    c: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for clip in clips:
        for obs, lab in zip(_observations(clip, channel), clip.segment_labels()):
            row = c[len(obs)]
            row[0] += 1
            row[1 if lab < 0 else 2] += 1
    return c


@lru_cache(maxsize=8)
def _rule(dataset: str, channel: str) -> dict[int, bool]:
    """n -> True if the Bayes rule guesses an event among the n observed classes."""
    n_classes = len(KINDS[dataset])
    rng = np.random.default_rng([20240, n_classes])  # fixed: the rule belongs to the generator
    pop = [sample_event_clip(rng, n_classes, int(rng.integers(n_classes)))
           for _ in range(_POPULATION)]
    return {n: n > 0 and ev / n > bg for n, (_, bg, ev) in _counts(pop, channel).items()}


def _expected_accuracy(clips: list[ClipTruth], channel: str, rule: dict[int, bool]) -> float:
    hits, total = 0.0, 0
    for clip in clips:
        for obs, lab in zip(_observations(clip, channel), clip.segment_labels()):
            total += 1
            n = len(obs)
            # n never seen in the population: answer background (the safer default)
            if rule.get(n, False):
                hits += (1.0 / n) if lab in obs else 0.0
            else:
                hits += 1.0 if lab < 0 else 0.0
    return hits / max(total, 1)


def _av_accuracy(clips: list[ClipTruth]) -> float:
    hits, total = 0, 0
    for clip in clips:
        for v, a, lab in zip(clip.visible_sets(), clip.audible_sets(), clip.segment_labels()):
            both = v & a
            pred = next(iter(both)) if len(both) == 1 else -1
            hits += int(pred == lab)
            total += 1
    return hits / max(total, 1)


def load_truth(world: str | Path) -> list[ClipTruth]:
    path = Path(world) / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: generate the world first "
                                "(avprompt data synth --out DIR)")
    return [ClipTruth.from_json(d) for d in json.loads(path.read_text())["clips"]]


def oracle_ceilings(world: str | Path | list[ClipTruth], split: str = "test") -> dict:
    """Oracle segment accuracies of the AVE- and VGG-Sound-format event tasks.

    world: a generated world directory (reads its ground-truth file) or a list of ClipTruth.
    Returns {"ave": {...}, "vggsound40k": {...}, "llp": {...}}; event entries hold
    audio_visual, visual_only, audio_only, background (floor), n_segments, split.
    """
    clips = load_truth(world) if isinstance(world, (str, Path)) else list(world)
    out: dict = {}
    for ds in ("ave", "vggsound40k"):
        sub = [c for c in clips if c.dataset == ds and c.split == split]
        if not sub:
            continue
        bg = sum(lab < 0 for c in sub for lab in c.segment_labels())
        out[ds] = {
            "split": split,
            "n_segments": 10 * len(sub),
            "audio_visual": round(_av_accuracy(sub), 4),
            "visual_only": round(_expected_accuracy(sub, "visual", _rule(ds, "visual")), 4),
            "audio_only": round(_expected_accuracy(sub, "audio", _rule(ds, "audio")), 4),
            "background": round(bg / (10 * len(sub)), 4),
        }
    llp = [c for c in clips if c.dataset == "llp" and c.split == split]
    if llp:
        def events(c: ClipTruth, ch: str) -> set[int]:
            return set().union(*_observations(c, ch))
        differ = sum(events(c, "visual") != events(c, "audio") for c in llp)
        out["llp"] = {"split": split, "n_videos": len(llp),
                      "videos_audio_events_differ_from_visual": round(differ / len(llp), 4)}
    return out
