"""Media preparation benchmark: first decode vs loading from the cache.

Generates N small H.264 + AAC mp4s (PyAV), prepares them once (decode, resize, resample, write
.npy) and then loads every clip back from the cache (frames and waveform fully read), printing
clips/s for both and their ratio (the cache should be >= 10x faster).

    python benchmarks/bench_prepare.py [--n 24] [--workers 2] [--image-size 224]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from avprompt.data.prepare import load_clip, prepare
from avprompt.data.records import ClipRecord, DatasetIndex
from avprompt.data.testmedia import write_test_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=24, help="number of clips")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=float, default=25)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        records = []
        for i in range(args.n):
            vid = f"bench{i:06d}"
            path = write_test_video(tmp / "video" / f"{vid}.mp4", fps=args.fps,
                                    width=args.width, height=args.height,
                                    sample_rate=44100, tone_hz=220 + 20 * i)
            records.append(ClipRecord(vid, vid, str(path), "test"))
        print(f"generated {args.n} mp4s ({args.width}x{args.height}, {args.fps} fps, 10 s) in "
              f"{time.perf_counter() - t:.1f} s")
        index = DatasetIndex("bench", tmp, ["tone"], records)

        t = time.perf_counter()
        report = prepare(index, tmp / "cache", args.image_size, args.sample_rate,
                         workers=args.workers, progress=False)
        first = time.perf_counter() - t
        assert report.decoded == args.n, report

        t = time.perf_counter()
        total = 0.0
        for r in records:
            frames, wave = load_clip(report.cache, r)
            total += float(np.asarray(frames, dtype=np.uint8).mean()) + float(np.asarray(wave)[-1])
        load = time.perf_counter() - t

    first_rate, load_rate = args.n / first, args.n / load
    print(f"first preparation: {first_rate:8.1f} clips/s ({args.workers} workers)")
    print(f"load from cache:   {load_rate:8.1f} clips/s")
    print(f"ratio: {load_rate / first_rate:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
