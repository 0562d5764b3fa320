"""AVQA (audio-visual question answering) metrics on MUSIC-AVQA, as the reference defines them.

Reference: METHODS.md, "AVQA on MUSIC-AVQA". Answer accuracy (percent) per question type, per
modality group and overall. Pure Python.

Conventions
-----------
* One question = one entry of four parallel lists: the predicted answer, the true answer (strings
  of the closed answer set, compared by exact string equality), the modality group and the
  question type, as in the record's ``type`` field (e.g. ``["Audio", "Counting"]``).
* Groups and their types (MUSIC-AVQA): Audio {Counting, Comparative}, Visual {Counting, Location},
  Audio-Visual {Existential, Counting, Location, Comparative, Temporal}. An unknown group, or a
  type the group does not have, is a ValueError (a swapped or misspelt field would otherwise score
  as a new category silently).

Keys of the result (``avqa_scores``), each ``{"accuracy": percent, "n": int, "correct": int}``:
* ``"<group>/<type>"``, e.g. ``"Audio/Counting"``, for every pair that has questions;
* ``"<group>"`` (``"Audio"``, ``"Visual"``, ``"Audio-Visual"``) for every group that has questions:
  all its questions pooled;
* ``"overall"``: all questions pooled (not the mean of the groups, which weights groups equally).
"""
from __future__ import annotations

from collections import Counter

GROUP_TYPES = {
    "Audio": ("Counting", "Comparative"),
    "Visual": ("Counting", "Location"),
    "Audio-Visual": ("Existential", "Counting", "Location", "Comparative", "Temporal"),
}
GROUPS = tuple(GROUP_TYPES)


def _check(groups, qtypes) -> None:
    for g, t in zip(groups, qtypes):
        if g not in GROUP_TYPES:
            raise ValueError(f"unknown AVQA group {g!r}; expected one of {GROUPS}")
        if t not in GROUP_TYPES[g]:
            raise ValueError(f"unknown AVQA type {t!r} for group {g!r}; expected one of "
                             f"{GROUP_TYPES[g]}")


def _same_length(**lists) -> int:
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"AVQA lists differ in length: {lengths}")
    return next(iter(lengths.values()))


def avqa_scores(predicted: list[str], answers: list[str], groups: list[str],
                qtypes: list[str]) -> dict:
    """Accuracy per type, per group and overall (see the module docstring for the keys)."""
    n = _same_length(predicted=predicted, answers=answers, groups=groups, qtypes=qtypes)
    if n == 0:
        raise ValueError("avqa_scores: no questions")
    _check(groups, qtypes)
    correct, total = Counter(), Counter()
    for p, a, g, t in zip(predicted, answers, groups, qtypes):
        hit = int(p == a)
        for key in (f"{g}/{t}", g, "overall"):
            total[key] += 1
            correct[key] += hit
    # fixed order: types within groups, then groups, then overall
    order = [f"{g}/{t}" for g, ts in GROUP_TYPES.items() for t in ts] + list(GROUPS) + ["overall"]
    return {k: {"accuracy": 100.0 * correct[k] / total[k], "n": total[k], "correct": correct[k]}
            for k in order if total[k]}


def _majority(answers) -> str:
    """Most frequent answer; ties go to the one seen first (Counter keeps insertion order)."""
    return Counter(answers).most_common(1)[0][0]


def avqa_floors(train_answers: list[str], train_groups: list[str], train_qtypes: list[str],
                test_answers: list[str], test_groups: list[str], test_qtypes: list[str]) -> dict:
    """Constant-answer floors fitted on the training questions, scored on the test questions.

    Returns ``{"type_majority": scores, "global_majority": scores, "type_majority_answers":
    {"<group>/<type>": answer}, "global_majority_answer": answer}`` where ``scores`` are
    ``avqa_scores`` dicts:
    * ``type_majority``: each test question gets the most frequent training answer of its
      (group, type); a pair absent from training falls back to the global majority answer;
    * ``global_majority``: every test question gets the most frequent training answer.
    Ties go to the answer that appears first in the training list.
    """
    if _same_length(train_answers=train_answers, train_groups=train_groups,
                    train_qtypes=train_qtypes) == 0:
        raise ValueError("avqa_floors: no training questions")
    _same_length(test_answers=test_answers, test_groups=test_groups, test_qtypes=test_qtypes)
    _check(train_groups, train_qtypes)
    global_answer = _majority(train_answers)
    by_type: dict[str, list[str]] = {}
    for a, g, t in zip(train_answers, train_groups, train_qtypes):
        by_type.setdefault(f"{g}/{t}", []).append(a)
    type_answer = {k: _majority(v) for k, v in by_type.items()}
    pred_type = [type_answer.get(f"{g}/{t}", global_answer)
                 for g, t in zip(test_groups, test_qtypes)]
    pred_global = [global_answer] * len(test_answers)
    return {"type_majority": avqa_scores(pred_type, test_answers, test_groups, test_qtypes),
            "global_majority": avqa_scores(pred_global, test_answers, test_groups, test_qtypes),
            "type_majority_answers": type_answer, "global_majority_answer": global_answer}
