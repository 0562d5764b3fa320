"""Caption corpus for pre-training the embedded image-text and audio-text backbones.

Each item is one object image (colour + shape) and one audio-tower window (1 s, or 10 s with the sound
in part of it: ``_render_item``) of one sound (pitch + timbre), drawn
by the same renderer as the benchmark videos, with captions made of the attribute words.

split="seen" draws only SEEN attribute pairs (those of the pre-training classes and the rest of the
grid); split="heldout" draws only the HELD-OUT pairs, i.e. exactly the pairs the AVE- and LLP-format
target classes are made of. Pre-training on "seen" and evaluating on "heldout" (or on the target
classes) is a zero-shot test: every word was seen, never the combination. The corpus uses its own
random stream (purpose codes 100/101), so no image or sound of it is a benchmark clip.
"""
from __future__ import annotations

import numpy as np

from avprompt.synthav.render import (IMAGE_SIZE, SAMPLE_RATE, render_audio, render_frame,
                                     sample_background, sample_look, sample_source)
from avprompt.synthav.vocab import HELDOUT_AUDIO, HELDOUT_VISUAL, SEEN_AUDIO, SEEN_VISUAL

_SPLIT_CODE = {"seen": 100, "heldout": 101}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_corpus(n: int, seed: int = 0, image_size: int = IMAGE_SIZE,
                   sample_rate: int = SAMPLE_RATE, seconds: float = 1.0,
                   split: str = "seen") -> dict:
    """n captioned single-object images and single-source sounds.

    Returns a dict:
        images: uint8 (n, image_size, image_size, 3)
        audio: float32 (n, round(seconds * sample_rate)) in [-1, 1]
        image_captions: list[str], e.g. "a red star", "an orange ring"
        audio_captions: list[str], e.g. "a high chime"
        captions: list[str], the four words in class-name order, e.g. "red star high chime"
            (image i and sound i are drawn independently; this names both)
        attributes: list[dict] with keys colour, shape, pitch, timbre
    Same (n, seed, split, sizes) -> identical arrays.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"caption_corpus split={split!r}: use 'seen' or 'heldout'")
    if n < 0:
        raise ValueError(f"caption_corpus n={n}: must be >= 0")
    visual = SEEN_VISUAL if split == "seen" else HELDOUT_VISUAL
    audio_pairs = SEEN_AUDIO if split == "seen" else HELDOUT_AUDIO
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    n_samples = int(round(seconds * sample_rate))
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    audio = np.empty((n, n_samples), np.float32)
    image_captions, audio_captions, captions, attributes = [], [], [], []
    for i in range(n):
        colour, shape = visual[int(rng.integers(len(visual)))]
        pitch, timbre = audio_pairs[int(rng.integers(len(audio_pairs)))]
        look = sample_look(rng, colour, shape)
        # a random time inside the object's motion/rhythm cycle, as a video frame would catch it
        t0 = float(rng.uniform(0, 10))
        images[i] = render_frame([look.at(t0)], sample_background(rng), image_size)
        audio[i] = _render_item([sample_source(rng, pitch, timbre)], t0,
                                float(rng.uniform(0.01, 0.03)), rng, seconds, sample_rate)
        image_captions.append(f"{_article(colour)} {colour} {shape}")
        audio_captions.append(f"{_article(pitch)} {pitch} {timbre}")
        captions.append(f"{colour} {shape} {pitch} {timbre}")
        attributes.append({"colour": colour, "shape": shape, "pitch": pitch, "timbre": timbre})
    return {"images": images, "audio": audio, "image_captions": image_captions,
            "audio_captions": audio_captions, "captions": captions, "attributes": attributes}


def _render_item(sources: list, t0: float, noise_level: float, rng: np.random.Generator,
                 seconds: float, sample_rate: int) -> np.ndarray:
    """One corpus sound: (round(seconds * sample_rate),) float32.

    Up to one second: the sources throughout (the 1 s towers' corpus, unchanged). Longer windows
    (a clip-length tower, e.g. 10 s) are built second by second like a benchmark clip
    (``media.render_clip``): the sources audible in ONE contiguous run of whole seconds, its length
    uniform in 1..seconds and its start uniform, the noise floor throughout. Why: a clip-length
    tower must name a sound that fills only part of its window, as an event does in an AVE clip.
    """
    if seconds <= 1.0:
        return render_audio(sources, t0, noise_level, rng, seconds, sample_rate)
    total = int(round(seconds))
    if abs(total - seconds) > 1e-9:
        raise ValueError(f"corpus seconds={seconds:g}: windows longer than 1 s must be whole seconds")
    run = int(rng.integers(1, total + 1))
    start = int(rng.integers(0, total - run + 1))
    return np.concatenate([render_audio(sources if start <= t < start + run else [], t0 + t, noise_level,
                                        rng, 1.0, sample_rate) for t in range(total)])


# Named pitch bands (PITCH_HZ +-4 % jitter) widened by this factor on each side: a timbre item's
# pitch never falls inside one, so no sound of ``timbre_corpus`` is a named pitch.
_BAND_MARGIN = 1.25
_TIMBRE_CODE = 102


def unnamed_pitch(rng: np.random.Generator, low: float = 140.0, high: float = 1500.0) -> float:
    """A fundamental (Hz), log-uniform in [low, high], outside every named pitch band."""
    from avprompt.synthav.render import PITCH_HZ

    while True:
        f = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        if all(not (hz / _BAND_MARGIN <= f <= hz * _BAND_MARGIN) for hz in PITCH_HZ.values()):
            return f


def timbre_corpus(n: int, seed: int = 0, sample_rate: int = SAMPLE_RATE, seconds: float = 1.0) -> dict:
    """n sounds (one tower window each) of every timbre at UNNAMED pitches, captioned by their timbre alone.

    Why: the seen pairs give each timbre only one or two named pitches, so an audio tower trained
    on them alone learns each (pitch, timbre) sound as a unit and cannot name the timbre of a
    held-out pair (measured: 21% timbre accuracy on held-out pairs). These items show every timbre
    across the pitch range, between and around the named bands but never inside one, so no
    held-out (pitch, timbre) pair is ever heard: zero-shot evaluation stays zero-shot.

    Returns a dict: audio float32 (n, samples); audio_captions (e.g. "a chime");
    attributes: dicts with pitch "" (unnamed), timbre and f0 (Hz).
    """
    from avprompt.synthav.render import SoundSource
    from avprompt.synthav.vocab import TIMBRES

    if n < 0:
        raise ValueError(f"timbre_corpus n={n}: must be >= 0")
    rng = np.random.default_rng([seed, _TIMBRE_CODE])
    n_samples = int(round(seconds * sample_rate))
    audio = np.empty((n, n_samples), np.float32)
    captions, attributes = [], []
    for i in range(n):
        timbre = TIMBRES[i % len(TIMBRES)]  # balanced over timbres
        f0 = unnamed_pitch(rng)
        src = SoundSource("", timbre, f0, float(rng.uniform(0.08, 0.15)), float(rng.uniform(0, 1)))
        audio[i] = _render_item([src], float(rng.uniform(0, 10)), float(rng.uniform(0.01, 0.03)), rng,
                                seconds, sample_rate)
        captions.append(f"{_article(timbre)} {timbre}")
        attributes.append({"pitch": "", "timbre": timbre, "f0": round(f0, 1)})
    return {"audio": audio, "audio_captions": captions, "attributes": attributes}
