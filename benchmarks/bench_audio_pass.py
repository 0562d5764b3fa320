"""Audio FLOPs and time per clip: ten 1 s segment passes vs one 10 s clip pass (``audio_pass``).

HTS-AT (laion-clap) stretches or pads any input to its 10 s window, so a 1 s segment costs as
much as the whole clip; ``audio_pass=clip`` encodes the clip once and pools each segment's time
span. FLOPs from ``torch.utils.flop_counter`` (the real forward, random weights), time as the
median of ``--repeats`` passes, both on the same 10 s waveform, one clip, in one run.

    python benchmarks/bench_audio_pass.py [--backbones clap=HTSAT-tiny,clap=HTSAT-base] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch

import avprompt  # noqa: F401  (offline hub before laion_clap)
from avprompt.encoders import load_encoders


def clip_wave(enc, segments: int = 10) -> torch.Tensor:
    """One seeded 10 s clip as ``segments`` 1 s segments: (1, segments, sample_rate)."""
    return 0.1 * torch.randn(1, segments, enc.audio.sample_rate, generator=torch.Generator().manual_seed(0))


def gflop_per_clip(enc, wave: torch.Tensor, mode: str) -> float:
    """GFLOP of the audio tower encoding one clip with ``audio_pass=mode`` (FlopCounterMode, plus
    the spectrogram's FFT: ``avprompt.flops``)."""
    from avprompt.flops import flop_counter
    with flop_counter() as fc, torch.no_grad():
        enc.encode({"audio": wave}, "a", audio_pass=mode)
    return fc.get_total_flops() / 1e9


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="clap=HTSAT-tiny,clap=HTSAT-base")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--segments", type=int, default=10)
    args = p.parse_args(argv)
    print(f"{'audio tower':<20} {'pass':<8} {'GFLOP/clip':>11} {'s/clip':>8} {'FLOP ratio':>11} {'time ratio':>11}")
    for spec in [s for s in args.backbones.split(",") if s]:
        enc = load_encoders(spec, modalities="a")
        rate = enc.audio.sample_rate
        if enc.audio.clip_samples < args.segments * rate:
            print(f"{spec:<20} window {enc.audio.clip_samples / rate:g} s < {args.segments} s clip: clip pass n/a")
            continue
        wave = clip_wave(enc, args.segments)
        row = {}
        for mode in ("segment", "clip"):
            gflop = gflop_per_clip(enc, wave, mode)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                enc.encode({"audio": wave}, "a", audio_pass=mode)
                times.append(time.perf_counter() - t0)
            row[mode] = (gflop, sorted(times)[len(times) // 2])
        (fs, ts), (fc_, tc) = row["segment"], row["clip"]
        print(f"{spec:<20} {'segment':<8} {fs:>11.1f} {ts:>8.2f}")
        print(f"{spec:<20} {'clip':<8} {fc_:>11.1f} {tc:>8.2f} {fs / fc_:>10.1f}x {ts / tc:>10.1f}x", flush=True)


if __name__ == "__main__":
    main()
