"""Rendering of one SynthAV segment: an image frame and one second of audio (numpy only).

The same functions draw the benchmark videos (``media.py``) and the caption corpus
(``corpus.py``), so the pre-training images/sounds and the evaluation clips come from one renderer.

Appearance is class-defining through colour and shape (size, position, rotation, motion, shading
and background are nuisances); sound is class-defining through pitch and timbre, where each timbre
has its own rhythm (steady, pulsed, struck, hit, swept or trilled). Nuisances: pitch jitter, gain,
rhythm phase, noise floor.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 64
SAMPLE_RATE = 16000

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (235, 220, 40),
    "green": (40, 180, 60), "blue": (40, 80, 225), "purple": (150, 50, 205)}
PITCH_HZ: dict[str, float] = {"low": 200.0, "mid": 450.0, "high": 1000.0}


@dataclass
class ObjectLook:
    """One drawn object. Positions/sizes are fractions of the image side so any size works.

    cx, cy: mean centre; radius: half extent; angle: rotation (radians) at time 0; spin: radians per
    second; wobble: (ax, ay) amplitude of a slow circular drift around the centre (small, so objects
    placed in different quadrants stay apart); omega: drift rate (radians per second);
    rgb: jittered colour; shade: (gx, gy) brightness gradient across the object (fake lighting).
    """

    shape: str
    rgb: tuple[float, float, float]
    cx: float
    cy: float
    radius: float
    angle: float = 0.0
    spin: float = 0.0
    wobble: tuple[float, float] = (0.0, 0.0)
    omega: float = 0.0
    shade: tuple[float, float] = (0.0, 0.0)

    def at(self, t: float) -> "ObjectLook":
        """The object t seconds later (moved along its drift, rotated by its spin)."""
        return replace(self, cx=self.cx + self.wobble[0] * np.sin(self.omega * t),
                       cy=self.cy + self.wobble[1] * np.cos(self.omega * t),
                       angle=self.angle + self.spin * t)


@dataclass(frozen=True)
class Background:
    """Desaturated gradient + static texture, so colour words only ever describe objects."""

    base: tuple[float, float, float]
    gradient: tuple[float, float]
    texture_seed: int
    texture_amp: float


@dataclass
class SoundSource:
    """One sound source: pitch/timbre words plus nuisances (jittered f0, gain, rhythm phase)."""

    pitch: str
    timbre: str
    f0: float
    gain: float  # RMS of the rendered source
    phase: float  # seconds: shifts the rhythm so sources are not synchronised


def sample_look(rng: np.random.Generator, colour: str, shape: str,
                centre: tuple[float, float] | None = None) -> ObjectLook:
    """Random nuisances for one object; centre=None places it anywhere it fits."""
    r = float(rng.uniform(0.14, 0.22))
    if centre is None:
        cx, cy = rng.uniform(r + 0.03, 1 - r - 0.03, size=2)
    else:
        cx, cy = np.asarray(centre) + rng.uniform(-0.02, 0.02, size=2)
    rgb = np.clip(np.array(COLOUR_RGB[colour], float) + rng.normal(0, 10, 3), 0, 255)
    return ObjectLook(shape, tuple(float(v) for v in rgb), float(cx), float(cy), r,
                      angle=float(rng.uniform(0, 2 * np.pi)), spin=float(rng.normal(0, 0.4)),
                      wobble=tuple(float(v) for v in rng.uniform(0, 0.03, size=2)),
                      omega=float(rng.uniform(0.5, 2.0)),
                      shade=tuple(float(v) for v in rng.uniform(-0.15, 0.15, size=2)))


def sample_background(rng: np.random.Generator) -> Background:
    grey = rng.uniform(60, 190)
    base = np.clip(grey + rng.normal(0, 8, 3), 0, 255)  # slight tint, never a colour word
    return Background(tuple(base), tuple(rng.uniform(-30, 30, size=2)),
                      int(rng.integers(2**31)), float(rng.uniform(3, 12)))


def sample_source(rng: np.random.Generator, pitch: str, timbre: str) -> SoundSource:
    return SoundSource(pitch, timbre, PITCH_HZ[pitch] * float(rng.uniform(0.96, 1.04)),
                       float(rng.uniform(0.08, 0.15)), float(rng.uniform(0, 1)))


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit shape; x, y: rotated coordinates in units of the radius."""
    r = np.hypot(x, y)
    if shape == "circle":
        return r < 0.95
    if shape == "ring":
        return (r < 1.0) & (r > 0.58)
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) < 0.75
    if shape == "triangle":
        # equilateral triangle inscribed in the unit circle: three half-planes
        m = np.ones_like(x, bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            m &= x * np.cos(a) + y * np.sin(a) > -0.5
        return m
    if shape == "star":
        theta = np.arctan2(y, x)
        return r < 0.5 + 0.5 * np.abs(np.cos(2.5 * theta)) ** 1.5
    if shape == "cross":
        ax, ay = np.abs(x), np.abs(y)
        return ((ax < 0.3) & (ay < 1.0)) | ((ay < 0.3) & (ax < 1.0))
    raise ValueError(f"unknown shape {shape!r}: expected one of circle, ring, square, triangle, "
                     "star, cross")


@lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    """Supersampled pixel-centre coordinates in [0, 1]: (2*size,)."""
    return (np.arange(2 * size) + 0.5) / (2 * size)


@lru_cache(maxsize=64)
def _background_image(background: Background, size: int) -> np.ndarray:
    """float64 (size, size, 3): gradient + blocky static texture (blocky: cheap to encode)."""
    tex = np.random.default_rng(background.texture_seed).normal(
        0, background.texture_amp, (size // 8 + 1, size // 8 + 1))
    tex = np.kron(tex, np.ones((8, 8)))[:size, :size]
    ys = (np.arange(size) + 0.5) / size - 0.5
    gx, gy = background.gradient
    img = (np.array(background.base)[None, None, :] + tex[..., None]
           + gx * ys[None, :, None] + gy * ys[:, None, None])
    img.flags.writeable = False
    return img


def render_frame(objects: list[ObjectLook], background: Background, size: int = IMAGE_SIZE,
                 noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw objects (in order, later ones on top) over the background.

    Returns uint8 (size, size, 3). Shapes are antialiased by 2x supersampling of the mask, computed
    only inside each object's bounding box.
    """
    img = _background_image(background, size).copy()
    g = _grid(size)
    for o in objects:
        # pixel bounding box (whole pixels) of the circle of radius `radius` around the centre
        x0 = max(0, int((o.cx - o.radius) * size) - 1)
        x1 = min(size, int((o.cx + o.radius) * size) + 2)
        y0 = max(0, int((o.cy - o.radius) * size) - 1)
        y1 = min(size, int((o.cy + o.radius) * size) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.meshgrid(g[2 * y0:2 * y1], g[2 * x0:2 * x1], indexing="ij")
        dx, dy = (xx - o.cx) / o.radius, (yy - o.cy) / o.radius
        c, s = np.cos(o.angle), np.sin(o.angle)
        m = _shape_mask(o.shape, c * dx + s * dy, -s * dx + c * dy).astype(np.float64)
        h, w = y1 - y0, x1 - x0
        alpha = m.reshape(h, 2, w, 2).mean(axis=(1, 3))[..., None]  # (h, w, 1) coverage
        light = (1.0 + o.shade[0] * dx + o.shade[1] * dy).reshape(h, 2, w, 2).mean(axis=(1, 3))
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch * (1 - alpha) + alpha * np.array(o.rgb) * light[..., None]
    if noise_rng is not None:
        img = img + noise_rng.normal(0, 2.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _tone(f: np.ndarray | float, t: np.ndarray, harmonics: list[tuple[float, float]]) -> np.ndarray:
    """Sum of harmonics (multiple, amplitude) of a (possibly time-varying) fundamental f."""
    if np.ndim(f) == 0:
        phase = 2 * np.pi * f * t
    else:  # integrate the instantaneous frequency so sweeps stay continuous
        phase = 2 * np.pi * (t[0] * f[0] + np.cumsum(f) / (1.0 / (t[1] - t[0])))
    out = np.zeros_like(t)
    for mult, amp in harmonics:
        out += amp * np.sin(mult * phase)
    return out


def _envelope_hits(t: np.ndarray, period: float, decay: float) -> np.ndarray:
    """Exponential decays restarting every `period` seconds (struck or hit sounds)."""
    return np.exp(-np.mod(t, period) / decay)


def render_source(src: SoundSource, t0: float, seconds: float = 1.0,
                  sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float64 (round(seconds*sample_rate),) waveform of one source from absolute time t0.

    Rendering from an absolute time keeps waveforms and rhythms continuous across segments.
    """
    n = int(round(seconds * sample_rate))
    t = t0 + np.arange(n) / sample_rate
    tp = t + src.phase
    f, nyq = src.f0, 0.45 * sample_rate
    if src.timbre == "whistle":  # pure tone with vibrato, steady
        y = _tone(f * (1 + 0.015 * np.sin(2 * np.pi * 5 * tp)), t, [(1, 1.0)])
    elif src.timbre == "buzz":  # sawtooth: all harmonics 1/k, steady
        y = _tone(f, t, [(k, 0.6 / k) for k in range(1, 16) if k * f < nyq])
    elif src.timbre == "horn":  # odd harmonics, pulsed twice a second
        gate = np.clip(3 * np.sin(2 * np.pi * 2 * tp) + 1.5, 0, 1)
        y = gate * _tone(f, t, [(k, 0.8 / k) for k in (1, 3, 5, 7, 9) if k * f < nyq])
    elif src.timbre == "chime":  # inharmonic bell partials, struck every 0.5 s
        y = _envelope_hits(tp, 0.5, 0.18) * _tone(
            f, t, [(m, a) for m, a in ((1, 1.0), (2.76, 0.5), (5.4, 0.25)) if m * f < nyq])
    elif src.timbre == "drum":  # pitch-dropping thump, four hits a second
        local = np.mod(tp, 0.25)
        tau = 0.03  # pitch falls from 1.6 f to f with this time constant
        phase = 2 * np.pi * f * (local + 0.6 * tau * (1 - np.exp(-local / tau)))
        y = np.exp(-local / 0.06) * np.sin(phase)
    elif src.timbre == "siren":  # fundamental swept +-25 % at 1.5 Hz
        y = _tone(f * (1 + 0.25 * np.sin(2 * np.pi * 1.5 * tp)), t, [(1, 1.0), (2, 0.3)])
    elif src.timbre == "trill":  # alternates f and 4/3 f eight times a second
        alt = np.where(np.mod(tp * 8, 2) < 1, 1.0, 4 / 3)
        y = _tone(f * alt, t, [(1, 1.0), (3, 0.2)])
    else:
        raise ValueError(f"unknown timbre {src.timbre!r}")
    # loudness is set by RMS, not peak, so sparse sounds (drum, chime) are as audible as steady ones
    return src.gain * y / max(float(np.sqrt(np.mean(y ** 2))), 1e-6) if y.size else y


def render_audio(sources: list[SoundSource], t0: float, noise_level: float,
                 rng: np.random.Generator, seconds: float = 1.0,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mix sources plus a noise floor: float32 (round(seconds*sample_rate),) in [-1, 1].

    noise_level: std of the noise (white + a part rolled off above 300 Hz, so it is not flat).
    """
    n = int(round(seconds * sample_rate))
    if n < 2:
        raise ValueError(f"render_audio: seconds={seconds} at {sample_rate} Hz gives {n} samples; "
                         "use at least two")
    y = np.zeros(n)
    for s in sources:
        y += render_source(s, t0, seconds, sample_rate)
    white = rng.normal(0, 1, n)
    # low-passed noise by spectral shaping (a python loop filter would be slow)
    spec = np.fft.rfft(rng.normal(0, 1, n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    low = np.fft.irfft(spec / np.sqrt(1 + (freqs / 300.0) ** 2), n)
    low /= max(float(low.std()), 1e-9)
    y += noise_level * (0.5 * white + 0.85 * low)
    return np.clip(y, -1, 1).astype(np.float32)
