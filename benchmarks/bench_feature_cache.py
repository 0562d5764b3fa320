"""Frozen-feature cache benchmark: one training epoch from cached features vs re-encoding.

A CoOp training epoch (CLIP-Adapter when CoOp is not registered) at 16 shots on a segment-level
task, on the full-size towers (``clip=ViT-B-32,clap=HTSAT-base``, random weights: the cost does
not depend on the weight values). Both sides run the same optimisation steps; re-encoding adds
the frozen encoders' forward pass over every clip of the epoch.

What is measured, in one run:
* encoding: ``--measure-clips`` clips (T segments each) through ``FeatureCache.get_or_compute``
  (encode + write), timed; the per-clip cost times the epoch's clip count gives the encoding part
  of a re-encoding epoch (encoding cost is linear in clips: fixed-size inputs, fixed batch size);
* cached epoch: a full epoch of optimisation steps on features read back from the cache
  (a cache without memory, so files are read), timed end to end. Its steps use the measured clips'
  features cycled over the epoch's clips (the step cost does not depend on the values);
* a check, run first (it also warms up): one real re-encoding training step on the measured
  clips, end to end, which should be close to their encoding time plus one step.
The ratio printed is (encoding part + cached epoch) / cached epoch; the target is >= 20x.

    python benchmarks/bench_feature_cache.py [--classes 4] [--shots 16] [--segments 10]
        [--measure-clips 1] [--method coop] [--modality av] [--device cpu]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

import avprompt  # noqa: F401  (offline hub settings before laion_clap)
from avprompt.encoders import load_encoders
from avprompt.engine.feature_cache import FeatureCache
from avprompt.registry import discover
from avprompt.task import TaskSpec


def make_inputs(encoders, ids: list[str], segments: int, modalities: str, device) -> dict:
    """Random frames/audio for the given clip ids (seeded per id, so a clip's input is fixed)."""
    batch = {}
    gens = [torch.Generator().manual_seed(hash(cid) % 2**31) for cid in ids]
    if "v" in modalities:
        s = encoders.vision.image_size
        batch["frames"] = torch.stack([torch.randn(segments, 3, s, s, generator=g) for g in gens]).to(device)
    if "a" in modalities:
        n = encoders.audio.sample_rate  # one-second segments
        batch["audio"] = torch.stack([0.1 * torch.randn(segments, n, generator=g) for g in gens]).to(device)
    return batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default="clip=ViT-B-32,clap=HTSAT-base")
    ap.add_argument("--method", default=None, help="default: coop when registered, else clip-adapter")
    ap.add_argument("--modality", default="av")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--measure-clips", type=int, default=1, help="clips actually encoded (timed)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    reg = discover()
    key = args.method or ("coop" if "coop" in reg else "clip-adapter")
    cls = reg[key]
    modality = args.modality if args.modality in cls.supported_modalities else cls.supported_modalities[0]
    if cls.runs_on != "features":
        raise SystemExit(f"method {key} runs in the network: the feature cache does not apply to it")
    dev = torch.device(args.device)

    t = time.perf_counter()
    torch.manual_seed(0)
    enc = load_encoders(args.backbones).to(dev)
    print(f"encoders {args.backbones} built in {time.perf_counter() - t:.1f} s; device {dev}; "
          f"threads {torch.get_num_threads()}")
    task = TaskSpec("bench", "segment", tuple(f"class {i}" for i in range(args.classes)), args.segments)
    method = cls(enc, task, cls.default_config(modality=modality)).to(dev)
    bs = method.config.batch_size
    n_clips = args.classes * args.shots
    steps = math.ceil(n_clips / bs)
    mods = method.modalities
    print(f"method {key} modality {modality}: {n_clips} clips ({args.classes} classes x {args.shots} shots) "
          f"x {args.segments} segments, batch {bs} -> {steps} steps per epoch")
    opt = torch.optim.SGD(method.trainable_parameters(), lr=method.config.lr, momentum=0.9)
    labels = torch.randint(0, task.num_outputs, (n_clips, args.segments), generator=torch.Generator().manual_seed(0))

    def step(batch: dict) -> None:
        opt.zero_grad()
        method.loss(method(batch), batch).backward()
        opt.step()

    ids = [f"clip{i:05d}" for i in range(args.measure_clips)]
    with tempfile.TemporaryDirectory() as tmp:
        # 0) one end-to-end re-encoding step on the measured clips: a check of the decomposition
        # below, and the warm-up (first-call allocations) so the timings after it are steady-state
        method.train()
        batch = {**make_inputs(enc, ids, args.segments, "".join(mods), dev),
                 "segment_labels": labels[: len(ids)].to(dev)}
        t = time.perf_counter()
        step(batch)
        check_s = time.perf_counter() - t
        print(f"measured: one re-encoding step on {len(ids)} clips (first call, incl. warm-up) took {check_s:.2f} s")

        # 1) encoding through the cache (miss: encode + write), timed per modality
        cache = FeatureCache(tmp)
        enc_s = 0.0
        for m in mods:
            def loader(missing, m=m):
                yield make_inputs(enc, missing, args.segments, m, dev)
            t = time.perf_counter()
            cache.get_or_compute(enc, m, ids, loader, dataset="bench", preprocessing={"segments": args.segments})
            enc_s += time.perf_counter() - t
        per_clip = enc_s / len(ids)
        print(f"measured: encoding {len(ids)} clips ({'+'.join(mods)}) took {enc_s:.2f} s = {per_clip:.2f} s/clip")

        # 2) a full cached epoch: read features back (no memory cache), then every step
        reader = FeatureCache(tmp, memory=False)
        cycled = [ids[i % len(ids)] for i in range(n_clips)]
        t = time.perf_counter()
        feats = {m: reader.get_or_compute(enc, m, cycled, lambda missing: iter(()), dataset="bench",
                                          preprocessing={"segments": args.segments}).to(dev) for m in mods}
        for s in range(steps):
            sl = slice(s * bs, min((s + 1) * bs, n_clips))
            step({**{"feat_" + m: feats[m][sl] for m in mods}, "segment_labels": labels[sl].to(dev)})
        cached_s = time.perf_counter() - t
        print(f"measured: cached epoch ({steps} steps incl. reading features) took {cached_s:.2f} s")

    reencode_s = per_clip * n_clips + cached_s
    print(f"extrapolated: re-encoding epoch = {per_clip:.2f} s/clip x {n_clips} clips + {cached_s:.2f} s "
          f"of steps = {reencode_s:.1f} s")
    ratio = reencode_s / cached_s
    print(f"speed-up of the feature cache: {ratio:.1f}x (target >= 20x): "
          f"{'OK' if ratio >= 20 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
