"""Caption corpus for pre-training the embedded image-text and audio-text backbones.

Each item is one object image (colour + shape) and one second of one sound (pitch + timbre), drawn
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
        audio[i] = render_audio([sample_source(rng, pitch, timbre)], t0,
                                float(rng.uniform(0.01, 0.03)), rng, seconds, sample_rate)
        image_captions.append(f"{_article(colour)} {colour} {shape}")
        audio_captions.append(f"{_article(pitch)} {pitch} {timbre}")
        captions.append(f"{colour} {shape} {pitch} {timbre}")
        attributes.append({"colour": colour, "shape": shape, "pitch": pitch, "timbre": timbre})
    return {"images": images, "audio": audio, "image_captions": image_captions,
            "audio_captions": audio_captions, "captions": captions, "attributes": attributes}
