"""SynthAV AVQA scenes and their questions (pure, no media).

A scene is a short "performance": 1-3 visible instruments at distinct horizontal slots (left, middle,
right), each visible for the whole 10 s and sounding over one contiguous interval or not at all,
sometimes plus one off-screen instrument that is heard but never seen. An instrument is a SynthAV
object: a colour-shape look and a pitch-timbre sound, named by its visual words as one token
(``red_star``), the way MUSIC-AVQA writes ``acoustic_guitar``. Loudness levels of one scene are
distinct and at least 4.4 dB apart, so "louder" always has a clear answer.

Questions follow the MUSIC-AVQA templates and placeholders (``<Object> <LR> <LRer> <FL> <LL>``);
every answer is computed from the scene, never sampled. Each video gets at most one question per
(group, type); among the questions a scene allows, the one whose answer is rarest so far in that
split and type is asked, and a yes/no question is skipped when only the commoner of the two
answers is possible, so yes and no never differ by more than one within a split and type.

Random streams are keyed by (seed, AVQA_CODE, video index, purpose) like ``scenes.clip_rng``, with a
code of their own so that they never coincide with a stream of the AVE/LLP/VGG-Sound world.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from avprompt.synthav.scenes import T
from avprompt.synthav.vocab import ObjectKind

AVQA_CODE = 21  # stream code; scenes._DATASET_CODE uses 1, 2, 3 and 9

# Eight instruments: every colour, shape and timbre occurs, no visual or audio pair repeats. Two
# colours occur twice; a scene never holds two instruments of one colour, so colour alone locates an
# instrument in a frame (the tests rely on it) while the name still needs the shape.
INSTRUMENTS: tuple[ObjectKind, ...] = (
    ObjectKind("red", "circle", "low", "drum"), ObjectKind("orange", "triangle", "mid", "whistle"),
    ObjectKind("yellow", "star", "high", "chime"), ObjectKind("green", "square", "low", "horn"),
    ObjectKind("blue", "cross", "mid", "siren"), ObjectKind("purple", "ring", "high", "buzz"),
    ObjectKind("red", "triangle", "high", "trill"), ObjectKind("blue", "star", "low", "whistle"))
INSTRUMENT_NAMES: tuple[str, ...] = tuple(f"{k.colour}_{k.shape}" for k in INSTRUMENTS)
SLOTS: tuple[str, ...] = ("left", "middle", "right")
SLOT_X: tuple[float, ...] = (0.17, 0.5, 0.83)  # image fractions; objects never cross a third
GAIN_LEVELS: tuple[float, ...] = (0.05, 0.09, 0.15, 0.25)  # RMS; successive ratios >= 1.67
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                            "nine", "ten")
# The closed answer set (a subset of the MUSIC-AVQA kinds: numbers, yes/no, positions,
# "simultaneously", instrument names). Fixed, so a class index never depends on the data.
ANSWERS: tuple[str, ...] = NUMBERS + ("yes", "no", "left", "middle", "right",
                                      "simultaneously") + INSTRUMENT_NAMES
TYPES: tuple[tuple[str, str], ...] = (
    ("Audio", "Counting"), ("Audio", "Comparative"), ("Visual", "Counting"), ("Visual", "Location"),
    ("Audio-Visual", "Existential"), ("Audio-Visual", "Counting"), ("Audio-Visual", "Location"),
    ("Audio-Visual", "Comparative"), ("Audio-Visual", "Temporal"))
PLACEHOLDER = re.compile(r"<(Object|LR|LRer|FL|TH|LL|BA)>")


_PLAYING_P: dict[int, list[float]] = {1: [0.3, 0.7], 2: [0.1, 0.3, 0.6], 3: [0.05, 0.2, 0.35, 0.4]}


def avqa_rng(seed: int, index: int, purpose: int) -> np.random.Generator:
    """Stream per (seed, video, purpose): 0 = scene, 1 = rendering, 2 = question choice."""
    return np.random.default_rng([seed, AVQA_CODE, index, purpose])


@dataclass
class Player:
    """One instrument of a scene. slot: index into SLOTS, -1 when off-screen.
    onset/offset: sounding interval in whole seconds [onset, offset), both -1 when silent."""

    instrument: int
    slot: int
    onset: int
    offset: int
    gain: float

    @property
    def name(self) -> str:
        return INSTRUMENT_NAMES[self.instrument]

    @property
    def visible(self) -> bool:
        return self.slot >= 0

    @property
    def sounding(self) -> bool:
        return self.onset >= 0

    @property
    def duration(self) -> int:
        return self.offset - self.onset if self.sounding else 0

    def audible_at(self, t: int) -> bool:
        return self.sounding and self.onset <= t < self.offset


@dataclass
class Scene:
    video_id: str
    split: str
    index: int
    players: list[Player]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Scene":
        return cls(d["video_id"], d["split"], d["index"], [Player(**p) for p in d["players"]])


def sample_scene(seed: int, index: int, video_id: str, split: str) -> Scene:
    """Draw one scene: which instruments, where, when and how loud they sound."""
    rng = avqa_rng(seed, index, 0)
    n_visible = int(rng.choice([1, 2, 3], p=[0.25, 0.35, 0.4]))
    # how many visible instruments sound, drawn directly so that no count dominates the counting
    # answers (about 13 % zero, 36 % one, 35 % two, 16 % three)
    n_playing = int(rng.choice(n_visible + 1, p=_PLAYING_P[n_visible]))
    n_off = int(rng.random() < 0.25)
    chosen: list[int] = []
    for k in rng.permutation(len(INSTRUMENTS)):  # distinct colours within a scene
        if INSTRUMENTS[k].colour not in {INSTRUMENTS[c].colour for c in chosen}:
            chosen.append(int(k))
        if len(chosen) == n_visible + n_off:
            break
    slots = [int(s) for s in rng.choice(len(SLOTS), size=n_visible, replace=False)] + [-1] * n_off
    gains = rng.choice(GAIN_LEVELS, size=len(chosen), replace=False)
    common_onset = int(rng.integers(0, 6)) if rng.random() < 0.1 else -1  # "simultaneously"
    players = []
    for i, (k, slot, gain) in enumerate(zip(chosen, slots, gains)):
        if slot >= 0 and i >= n_playing:  # slots are a random permutation: silent ones are random
            players.append(Player(k, slot, -1, -1, float(gain)))  # seen, never heard
            continue
        onset = common_onset if common_onset >= 0 else int(rng.integers(0, 7))
        offset = int(rng.integers(onset + 3, T + 1))
        players.append(Player(k, slot, onset, offset, float(gain)))
    return Scene(video_id, split, index, players)


def _unique_extreme(players: list[Player], last: bool) -> Player | None:
    """The sounding player that starts first (or last), None when tied or nobody sounds."""
    onsets = [p.onset for p in players]
    if not onsets:
        return None
    target = max(onsets) if last else min(onsets)
    hits = [p for p in players if p.onset == target]
    return hits[0] if len(hits) == 1 else None


Candidate = tuple[str, list[str], str]  # (question_content, templ_values, answer)


def candidates(scene: Scene) -> dict[tuple[str, str], list[Candidate]]:
    """Every question this scene can answer unambiguously, per (group, type)."""
    ps = scene.players
    heard = [p for p in ps if p.sounding]
    seen = [p for p in ps if p.visible]
    seen_heard = [p for p in seen if p.sounding]
    absent = [n for n in INSTRUMENT_NAMES if n not in {p.name for p in ps}]
    not_heard = [p.name for p in ps if not p.sounding] + absent
    not_seen = [p.name for p in ps if not p.visible] + absent
    yn = ("no", "yes")
    out: dict[tuple[str, str], list[Candidate]] = {t: [] for t in TYPES}

    c = out[("Audio", "Counting")]
    c.append(("How many instruments were heard throughout the video?", [], NUMBERS[len(heard)]))
    c += [("Is there a <Object> sound?", [p.name], "yes") for p in heard]
    c += [("Is there a <Object> sound?", [n], "no") for n in not_heard]

    c = out[("Audio", "Comparative")]
    for a in heard:
        for b in heard:
            if a is b:
                continue
            c.append(("Is the <Object> louder than the <Object>?", [a.name, b.name],
                      yn[a.gain > b.gain]))
            if a.duration != b.duration:
                c.append(("Is the <Object> playing longer than the <Object>?", [a.name, b.name],
                          yn[a.duration > b.duration]))

    c = out[("Visual", "Counting")]
    c.append(("How many instruments are in the entire video?", [], NUMBERS[len(seen)]))
    c += [("Is there a <Object> in the entire video?", [p.name], "yes") for p in seen]
    c += [("Is there a <Object> in the entire video?", [n], "no") for n in not_seen]

    c = out[("Visual", "Location")]
    c += [("Where is the <Object>?", [p.name], SLOTS[p.slot]) for p in seen]
    if len(seen) >= 2:
        by_x = sorted(seen, key=lambda p: p.slot)
        c.append(("What kind of instrument is the <LRer> instrument?", ["leftest"], by_x[0].name))
        c.append(("What kind of instrument is the <LRer> instrument?", ["rightest"], by_x[-1].name))

    c = out[("Audio-Visual", "Existential")]
    c += [("Is the <Object> in the video making a sound?", [p.name], yn[p.sounding]) for p in seen]

    out[("Audio-Visual", "Counting")].append(
        ("How many instruments are sounding in the video?", [], NUMBERS[len(seen_heard)]))

    c = out[("Audio-Visual", "Location")]
    if heard:
        loudest = max(heard, key=lambda p: p.gain)
        if loudest.visible:  # an off-screen loudest sound has no place
            c.append(("Where is the <LL> instrument?", ["loudest"], SLOTS[loudest.slot]))
    if len(heard) >= 2:
        for fl in ("first", "last"):
            p = _unique_extreme(heard, last=fl == "last")
            if p is not None:
                c += [("Is the <FL> sound coming from the <LR> instrument?", [fl, SLOTS[q.slot]],
                       yn[q is p]) for q in seen]

    c = out[("Audio-Visual", "Comparative")]
    for a in seen_heard:
        for b in seen_heard:
            if a is b:
                continue
            c.append(("Is the instrument on the <LR> louder than the instrument on the <LR>?",
                      [SLOTS[a.slot], SLOTS[b.slot]], yn[a.gain > b.gain]))
            if a.duration != b.duration:
                c.append(("Is the <Object> on the <LR> playing longer than the <Object> on the <LR>?",
                          [a.name, SLOTS[a.slot], b.name, SLOTS[b.slot]],
                          yn[a.duration > b.duration]))

    c = out[("Audio-Visual", "Temporal")]
    if len(heard) >= 2:
        for fl in ("first", "last"):
            p = _unique_extreme(heard, last=fl == "last")
            if p is None:
                c.append(("Which instrument makes the sound <FL>?", [fl], "simultaneously"))
            else:
                c.append(("Which instrument makes the sound <FL>?", [fl], p.name))
                if p.visible:
                    c.append(("Where is the <FL> sounding instrument?", [fl], SLOTS[p.slot]))
    return out


def type_string(group_type: tuple[str, str]) -> str:
    """The JSON-encoded type field, exactly as MUSIC-AVQA writes it: '["Audio", "Counting"]'."""
    return json.dumps(list(group_type))


def ask(scenes: list[Scene], seed: int, first_qid: int = 0) -> list[dict]:
    """MUSIC-AVQA records for scenes (one split), balancing answers per type as described above."""
    seen_answers: dict[tuple[str, str], Counter] = {t: Counter() for t in TYPES}
    records: list[dict] = []
    for scene in scenes:
        rng = avqa_rng(seed, scene.index, 2)
        for gt, cands in candidates(scene).items():
            if not cands:
                continue
            counts = seen_answers[gt]
            least = min(counts[a] for _, _, a in cands)
            pool = [x for x in cands if counts[x[2]] == least]
            question, values, answer = pool[int(rng.integers(len(pool)))]
            other = {"yes": "no", "no": "yes"}.get(answer)
            if other is not None and counts[answer] > counts[other]:
                continue  # the scene allows only the commoner of yes/no: skip, keep them 50/50
            counts[answer] += 1
            assert len(PLACEHOLDER.findall(question)) == len(values) and answer in ANSWERS
            records.append({"video_id": scene.video_id, "question_id": first_qid + len(records),
                            "type": type_string(gt), "question_content": question,
                            "templ_values": json.dumps(values), "question_deleted": 0,
                            "anser": answer})
    return records


def constant_floors(train: list[dict], test: list[dict]) -> dict[str, dict]:
    """Per type (and pooled): the most frequent training answer and its accuracy on test."""
    out: dict[str, dict] = {}
    groups = [(type_string(t), lambda r, s=type_string(t): r["type"] == s) for t in TYPES]
    for key, keep in groups + [("all", lambda r: True)]:
        tr = Counter(r["anser"] for r in train if keep(r))
        te = [r["anser"] for r in test if keep(r)]
        if not tr or not te:
            out[key] = {"answer": None, "accuracy": None, "n_test": len(te)}
            continue
        # ties broken by the answer string, so the floor never depends on record order
        answer = min(tr, key=lambda a: (-tr[a], a))
        out[key] = {"answer": answer, "accuracy": round(sum(a == answer for a in te) / len(te), 4),
                    "n_test": len(te)}
    return out
