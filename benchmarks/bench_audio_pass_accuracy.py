"""Accuracy cost of ``audio_pass=clip`` on SynthAV: the same cells encoded both ways, paired.

Runs the product's sweep twice on the 10 s-window SynthAV audio tower (backbone spec
``synthav-10s``; the default tower's 1 s window cannot hear a clip in one pass)::

    avprompt bench --backbones synthav-10s --methods zeroshot-clap,linear-probe --modality a \
        --shots K,... --audio-pass {segment,clip} --out OUT/{segment,clip}
    avprompt bench --backbones synthav-10s --methods dg-sct ... (the same, its av branch)

(a store already holding a cell skips it), then prints, per method, one markdown row per task and
K: each pass's mean over seeds and clip - segment with its paired 95% CI (two-level bootstrap over
seeds and the same test videos, ``*`` when it excludes 0), and the audio FLOPs per clip of each pass.

    python benchmarks/bench_audio_pass_accuracy.py [--out runs/audio-pass] [--shots 1,2,4,8,16]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PASSES = ("segment", "clip")
METHODS = ("zeroshot-clap@a", "linear-probe@a", "dg-sct@av")


def audio_gflop_per_clip(spec: str = "synthav-10s", segments: int = 10) -> dict[str, float]:
    """{pass: GFLOP of the audio tower for one clip of ``segments`` 1 s segments}."""
    from bench_audio_pass import clip_wave, gflop_per_clip

    from avprompt.encoders import load_encoders
    enc = load_encoders(spec, modalities="a")
    wave = clip_wave(enc, segments)
    return {mode: gflop_per_clip(enc, wave, mode) for mode in PASSES}


def main(argv=None) -> int:
    from compare_variants import paired_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/audio-pass")
    ap.add_argument("--shots", default="1,2,4,8,16")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the sweep's)")
    ap.add_argument("--backbones", default="synthav-10s")
    args = ap.parse_args(argv)
    out = Path(args.out)
    for mode in PASSES:
        for methods, modality in (("zeroshot-clap,linear-probe", "a"), ("dg-sct", "av")):
            cmd = ["avprompt", "bench", "--backbones", args.backbones, "--methods", methods, "--modality", modality,
                   "--shots", args.shots, "--audio-pass", mode, "--out", str(out / mode)]
            if args.seeds:
                cmd += ["--seeds", args.seeds]
            t0 = time.monotonic()
            print("$ " + " ".join(cmd), flush=True)
            rc = subprocess.run(cmd).returncode
            if rc:
                print(f"error: the {mode} sweep failed (rc {rc}); fix it and rerun (done cells are kept)",
                      file=sys.stderr)
                return rc
            print(f"{mode} {methods}: {time.monotonic() - t0:.0f} s", flush=True)
    flops = audio_gflop_per_clip(args.backbones)
    print(f"\naudio tower {args.backbones}: {flops['segment']:.3f} GFLOP per clip (segment) vs "
          f"{flops['clip']:.3f} (clip): {flops['segment'] / flops['clip']:.1f}x fewer")
    for method in METHODS:
        print(f"\n{method}: clip - segment\n")
        print("\n".join(paired_table(method, [(m, str(out / m)) for m in PASSES])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
