"""Frozen-feature cache benchmark: one training epoch from cached features vs re-encoding.

Both epochs are measured (nothing extrapolated): the same method, the same batches and the same
optimisation steps through the product's training loop; one reads the features from the cache,
the other gives the loop raw frames and waveforms, so the frozen towers run inside every step.
Defaults: CoOp@av at real size (ViT-B-32 + HTSAT-tiny, random weights), 2 classes x 8 shots x
10 segments (16 clips, one batch: re-encoding takes 2-3 minutes on 2 cores).

    python benchmarks/bench_feature_cache.py [--classes 2] [--shots 8] [--method coop] [--modality av]
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
    ap.add_argument("--backbones", default="clip=ViT-B-32,clap=HTSAT-tiny")
    ap.add_argument("--method", default="coop")
    ap.add_argument("--modality", default="av")
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from avprompt.engine import loop

    reg = discover()
    cls = reg[args.method]
    if cls.runs_on != "features":
        raise SystemExit(f"method {args.method} runs in the network: the feature cache does not apply to it")
    dev = torch.device(args.device)
    t = time.perf_counter()
    torch.manual_seed(0)
    enc = load_encoders(args.backbones).to(dev)
    print(f"encoders {args.backbones} built in {time.perf_counter() - t:.1f} s; device {dev}; "
          f"threads {torch.get_num_threads()}")
    task = TaskSpec("bench", "segment", tuple(f"class {i}" for i in range(args.classes)), args.segments)

    def fresh():
        torch.manual_seed(0)
        return cls(enc, task, cls.default_config(modality=args.modality)).to(dev)

    method = fresh()
    mods = "".join(method.modalities)
    n_clips = args.classes * args.shots
    bs = method.config.batch_size
    steps = math.ceil(n_clips / bs)
    print(f"method {args.method}@{args.modality}: an epoch of {n_clips} clips ({args.classes} classes x "
          f"{args.shots} shots) x {args.segments} segments, batch {bs} = {steps} step(s), through the "
          "product's training loop (engine.loop.train)")
    ids = [f"clip{i:05d}" for i in range(n_clips)]
    inputs = make_inputs(enc, ids, args.segments, mods, dev)
    labels = torch.randint(0, task.num_outputs, (n_clips, args.segments),
                           generator=torch.Generator().manual_seed(0)).to(dev)

    def epoch_of(tensors: dict):
        def batches(epoch):
            for s in range(0, n_clips, bs):
                yield {**{k: v[s:s + bs] for k, v in tensors.items()}, "segment_labels": labels[s:s + bs]}
        return batches

    with tempfile.TemporaryDirectory() as tmp:
        # the features each epoch reads: encoded once into the cache (timed: the one-off cost)
        cache = FeatureCache(tmp)
        t = time.perf_counter()
        feats = {}
        for m in mods:
            key = "frames" if m == "v" else "audio"
            feats["feat_" + m] = cache.get_or_compute(
                enc, m, ids, lambda missing, key=key: iter([{key: inputs[key]}]), dataset="bench",
                preprocessing={"segments": args.segments}).to(dev)
        encode_s = time.perf_counter() - t
        print(f"measured: encoding the {n_clips} clips into the cache once: {encode_s:.1f} s")
        # warm-up (first-call allocations), then one epoch each way, same steps, same loop
        loop.train(fresh(), epoch_of(feats), None, 1, dev)
        m = fresh()  # built outside the timed region (building is not part of an epoch)
        t = time.perf_counter()
        loop.train(m, epoch_of(feats), None, 1, dev)
        cached_s = time.perf_counter() - t
        print(f"measured: one epoch from cached features: {cached_s:.3f} s")
        m = fresh()
        t = time.perf_counter()
        loop.train(m, epoch_of({k: inputs[k] for k in ("frames", "audio") if k in inputs}), None, 1, dev)
        reencode_s = time.perf_counter() - t
        print(f"measured: one epoch re-encoding every clip (the frozen towers inside the step): {reencode_s:.1f} s")
    print(f"speed-up of the feature cache per epoch: {reencode_s / cached_s:.0f}x (target >= 20x), "
          f"measured in one run")


if __name__ == "__main__":
    main()
