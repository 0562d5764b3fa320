"""Small synthetic mp4 files (H.264 + AAC through PyAV) for tests and the preparation benchmark.

Frame i shows a flat colour that encodes its segment (so tests can check which frame was picked)
and the audio is a sine tone; both are cheap to encode at tiny sizes.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def segment_colour(t: int) -> tuple[int, int, int]:
    """RGB colour of the frames inside second t (distinct, far apart for t = 0..9)."""
    return (25 * t + 10, 250 - 25 * t, 128)


def write_test_video(path: str | Path, seconds: float = 10.0, fps: float = 8, width: int = 96,
                     height: int = 64, audio: bool = True, sample_rate: int = 16000,
                     tone_hz: float = 440.0) -> Path:
    """Write an H.264 (+ AAC when ``audio``) mp4 of ``seconds`` at ``fps`` (may be fractional)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "tune": "zerolatency"}
        a_s = None
        if audio:
            a_s = c.add_stream("aac", rate=sample_rate)
            a_s.layout = "mono"
        n_frames = int(round(seconds * float(rate)))
        for i in range(n_frames):
            t = int(i / float(rate))
            img = np.empty((height, width, 3), np.uint8)
            img[:] = segment_colour(min(t, 9))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a_s is not None:
            n = int(seconds * sample_rate)
            tone = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(n) / sample_rate))
            chunk = 1024
            for s in range(0, n, chunk):
                data = tone[s:s + chunk].astype(np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="flt",
                                                   layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = s
                frame.time_base = Fraction(1, sample_rate)
                for p in a_s.encode(frame):
                    c.mux(p)
            for p in a_s.encode():
                c.mux(p)
    return path
