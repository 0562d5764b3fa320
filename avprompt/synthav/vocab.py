"""SynthAV vocabulary: attribute words, object kinds and the three disjoint class sets.

An object kind is a 4-tuple of attribute words: two visual (colour, shape) and two audio (pitch,
timbre). Its class name is the four words in that order, e.g. ``"red star high chime"``, so the
image text tower can learn the visual half and the audio text tower the audio half.

Zero-shot transfer is possible by names only: the visual pairs (colour, shape) and audio pairs
(pitch, timbre) of the target classes (AVE- and LLP-format sets) are HELD OUT, they never appear in
the pre-training classes nor in the ``"seen"`` caption corpus, while every single word does.
The vocabulary is fixed (independent of the seed) so that documentation and results stay comparable.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
PITCHES: tuple[str, ...] = ("low", "mid", "high")
TIMBRES: tuple[str, ...] = ("whistle", "buzz", "horn", "chime", "drum", "siren", "trill")

VisualPair = tuple[str, str]  # (colour, shape)
AudioPair = tuple[str, str]  # (pitch, timbre)


@dataclass(frozen=True)
class ObjectKind:
    """One object kind: what it looks like and what it sounds like."""

    colour: str
    shape: str
    pitch: str
    timbre: str

    @property
    def name(self) -> str:
        """Class name with spaces (AVE and VGG-Sound style)."""
        return f"{self.colour} {self.shape} {self.pitch} {self.timbre}"

    @property
    def llp_name(self) -> str:
        """Class name with underscores (LLP style: labels are comma-separated tokens)."""
        return self.name.replace(" ", "_")

    @property
    def visual(self) -> VisualPair:
        return (self.colour, self.shape)

    @property
    def audio(self) -> AudioPair:
        return (self.pitch, self.timbre)

    def attributes(self) -> dict[str, str]:
        return {"colour": self.colour, "shape": self.shape, "pitch": self.pitch,
                "timbre": self.timbre}


def _heldout_visual() -> list[VisualPair]:
    # Two shifted diagonals of the 6x6 colour-shape grid: every colour and every shape keeps at
    # least four seen partners, so each word is learnable from the seen pairs.
    n = len(SHAPES)
    diag = [(COLOURS[i], SHAPES[i]) for i in range(n)]
    anti = [(COLOURS[i], SHAPES[(i + 3) % n]) for i in range(4)]
    return diag + anti


def _heldout_audio() -> list[AudioPair]:
    # Timbre j is held out with pitch j mod 3 (7 pairs) plus a second pitch for the first two
    # timbres; every timbre still has at least one seen pitch and every pitch several timbres.
    pairs = [(PITCHES[j % 3], TIMBRES[j]) for j in range(len(TIMBRES))]
    pairs += [(PITCHES[(j + 1) % 3], TIMBRES[j]) for j in range(2)]
    return pairs


HELDOUT_VISUAL: tuple[VisualPair, ...] = tuple(_heldout_visual())
HELDOUT_AUDIO: tuple[AudioPair, ...] = tuple(_heldout_audio())
SEEN_VISUAL: tuple[VisualPair, ...] = tuple(
    p for p in product(COLOURS, SHAPES) if p not in HELDOUT_VISUAL)
SEEN_AUDIO: tuple[AudioPair, ...] = tuple(
    p for p in product(PITCHES, TIMBRES) if p not in HELDOUT_AUDIO)


def _kinds(visual: list[VisualPair], audio: list[AudioPair]) -> tuple[ObjectKind, ...]:
    return tuple(ObjectKind(c, s, p, t) for (c, s), (p, t) in zip(visual, audio))


def _spread(pairs: tuple, n: int, step: int) -> list:
    # Deterministic walk through the pair list with a stride coprime to its length: the picked
    # pairs cover many different words instead of the first rows of the grid.
    m = len(pairs)
    out, i = [], 0
    while len(out) < n:
        if pairs[i % m] not in out:
            out.append(pairs[i % m])
        i += step
    return out


# Target classes (evaluated few-shot and zero-shot): held-out visual AND audio pairs. Within one set
# every visual pair and every audio pair is unique, so a class is identified by either modality
# alone when only one object is present: what makes the task hard is telling WHICH object is the
# event.
AVE_KINDS: tuple[ObjectKind, ...] = _kinds(list(HELDOUT_VISUAL[:8]), list(HELDOUT_AUDIO[:8]))
LLP_KINDS: tuple[ObjectKind, ...] = _kinds(
    list(HELDOUT_VISUAL[2:10]), [HELDOUT_AUDIO[(i + 3) % len(HELDOUT_AUDIO)] for i in range(8)])
# Pre-training classes (VGG-Sound-40K format): seen pairs only.
PRETRAIN_KINDS: tuple[ObjectKind, ...] = _kinds(_spread(SEEN_VISUAL, 12, 7),
                                                _spread(SEEN_AUDIO, 12, 5))

ALL_WORDS: tuple[str, ...] = COLOURS + SHAPES + PITCHES + TIMBRES


def class_sets() -> dict[str, list[str]]:
    """Class names of the three sets (dataset order)."""
    return {"ave": [k.name for k in AVE_KINDS], "llp": [k.llp_name for k in LLP_KINDS],
            "vggsound40k": [k.name for k in PRETRAIN_KINDS]}


def check_vocabulary() -> None:
    """Raise AssertionError if the design invariants above do not hold (run by the tests)."""
    for kinds in (AVE_KINDS, LLP_KINDS, PRETRAIN_KINDS):
        assert len({k.visual for k in kinds}) == len(kinds), "visual pair repeated in a class set"
        assert len({k.audio for k in kinds}) == len(kinds), "audio pair repeated in a class set"
    targets = set(AVE_KINDS) | set(LLP_KINDS)
    assert not targets & set(PRETRAIN_KINDS)
    assert all(k.visual in HELDOUT_VISUAL and k.audio in HELDOUT_AUDIO for k in targets)
    assert all(k.visual in SEEN_VISUAL and k.audio in SEEN_AUDIO for k in PRETRAIN_KINDS)
    seen_words = {w for p in SEEN_VISUAL + SEEN_AUDIO for w in p}
    assert set(ALL_WORDS) <= seen_words, "a word never appears in a seen pair"
