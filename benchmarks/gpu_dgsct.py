"""DG-SCT training step on one GPU: fp32 / bf16 autocast x activation checkpointing (of the frozen
block halves and of DG-SCT's modules). One JSON line per configuration: step time, peak memory, model FLOPs per step and MFU.

ViT-B-16 + HTSAT-base (random weights: nothing is downloaded), AVE-like task (28 classes +
background), batch 8 x 10 segments, DG-SCT's paper preset, Adam; the steps go through the
product's own training loop (``avprompt.engine.loop.train``, which applies bf16 autocast on GPU
when asked). FLOPs: ``torch.utils.flop_counter`` over one fp32 step without checkpointing (the
model's FLOPs; recomputation is not counted as useful work), MFU = FLOPs / step time / the
device's dense bf16 peak (table below; unknown devices print mfu null).

    python benchmarks/gpu_dgsct.py                 # the four configurations, < 5 minutes on an H100/H200
    python benchmarks/gpu_dgsct.py --steps 3 --batch 4
    python benchmarks/gpu_dgsct.py --device cpu --backbones tiny --batch 2   # a smoke run of the script
    python benchmarks/gpu_dgsct.py --profile bf16  # where one configuration's step goes

Without a CUDA GPU (and without ``--device cpu``) it exits with one line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

#: dense bf16 tensor-core peaks, FLOP/s (vendor datasheets, SXM parts)
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
CONFIGS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def _peak(name: str):
    for key, value in BF16_PEAK.items():
        if key in name:
            return value
    return None


def build(backbones: str, batch: int, segments: int, ckpt, device, cache_text: bool = True,
          audio_pass: str = "segment"):
    """DG-SCT (paper preset) on random-weight towers + one seeded batch, both on ``device``
    (also used by ``bench_dgsct.py``). ``ckpt``: activation checkpointing, "none" | "frozen" (the
    frozen block halves) | "modules" (each DG-SCT pair) | "all"; True = "all". ``audio_pass``:
    DG-SCT's option (clip: one audio-tower pass per clip, guidance per span)."""
    import torch

    from avprompt.dgsct.method import DGSCT
    from avprompt.encoders import load_encoders
    from avprompt.task import TaskSpec

    torch.manual_seed(0)
    enc = load_encoders(backbones)
    task = TaskSpec("ave", "segment", tuple(f"class {i}" for i in range(28)), num_segments=segments)
    ckpt = {True: "all", False: "none"}.get(ckpt, ckpt)
    model = DGSCT(enc, task, DGSCT.default_config(checkpoint_frozen=ckpt in ("frozen", "all"),
                                                  checkpoint_modules=ckpt in ("modules", "all"),
                                                  cache_text=cache_text, audio_pass=audio_pass)).to(device)
    s = enc.vision.image_size
    g = torch.Generator().manual_seed(0)
    b = {"frames": torch.randn(batch, segments, 3, s, s, generator=g),
         "audio": 0.1 * torch.randn(batch, segments, enc.audio.sample_rate, generator=g),
         "segment_labels": torch.randint(0, 29, (batch, segments), generator=g)}
    return model, {k: v.to(device) for k, v in b.items()}


def count_flops(model, batch) -> int:
    from avprompt.flops import flop_counter  # FlopCounterMode + the spectrogram's FFT
    model.train()
    with flop_counter() as fc:
        model.loss(model(batch), batch).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


@contextlib.contextmanager
def precision(dtype: str, device):
    """fp32: plain fp32 (no TF32: the reference computation); bf16: the loop's own autocast."""
    import torch

    from avprompt.engine import loop

    cuda = device.type == "cuda"
    saved = (loop.autocast, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if dtype == "fp32":
        loop.autocast = lambda dev: torch.autocast(dev.type, enabled=False)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        loop.autocast, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def warm_up(model, batch, device) -> None:
    """Two training steps (kernels, allocator, Adam state); then the peak-memory counter is reset."""
    import torch

    from avprompt.engine import loop

    loop.train(model, lambda e: [batch], None, 2, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def timed(model, batch, steps: int, device) -> float:
    """Seconds per training step through the product's loop, over ``steps`` steps."""
    import torch

    from avprompt.engine import loop

    t0 = time.perf_counter()
    report = loop.train(model, lambda e: [batch] * steps, None, 1, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / report.steps


def run_config(args, dtype: str, ckpt: bool, device, flops: int | None) -> dict:
    import torch

    model, batch = build(args.backbones, args.batch, args.segments, ckpt, device)
    cuda = device.type == "cuda"
    with precision(dtype, device):
        warm_up(model, batch, device)
        step = timed(model, batch, args.steps, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    bf16_peak = _peak(name) if cuda else None
    out = {"device": name, "backbones": args.backbones, "batch": args.batch, "segments": args.segments,
           "dtype": dtype, "checkpointing": bool(ckpt), "step_s": round(step, 4),
           "peak_mib": None if peak is None else round(peak), "flops_per_step": flops,
           "tflops_per_s": None if not flops else round(flops / step / 1e12, 2),
           "mfu": None if not (flops and bf16_peak) else round(flops / step / bf16_peak, 4)}
    model = batch = None  # free the GPU memory before the next configuration
    if cuda:
        torch.cuda.empty_cache()
    return out


def profile_config(args, dtype: str, ckpt: bool, device, top: int = 12) -> dict:
    """Where one configuration's step time goes (torch.profiler over ``args.steps`` steps): the
    device's kernel time per step against the wall time (busy < 1: the GPU waits on the host, e.g.
    on kernel launches), kernels per step, and the ops with the largest share of kernel time (on
    CPU: of host self time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model, batch = build(args.backbones, args.batch, args.segments, ckpt, device)
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with precision(dtype, device):
        warm_up(model, batch, device)  # outside the profile
        with profile(activities=acts) as prof:
            step = timed(model, batch, args.steps, device)
    field = "self_device_time_total" if cuda else "self_cpu_time_total"
    # host-side ops only, each with the device time of the kernels it launched itself (the kernels
    # are listed as events of their own too: counting both would count each microsecond twice)
    ops = [e for e in prof.key_averages()
           if e.device_type == torch.autograd.DeviceType.CPU and getattr(e, field, 0) > 0]
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_s = sum(e.self_device_time_total for e in kernels) / 1e6
    total = sum(getattr(e, field) for e in ops) or 1.0
    ops.sort(key=lambda e: -getattr(e, field))
    return {"profile": f"{dtype}{' + checkpointing' if ckpt else ''}", "batch": args.batch,
            "step_s": round(step, 4),
            "device_busy_s_per_step": round(busy_s / args.steps, 4) if cuda else None,
            "kernels_per_step": round(len(kernels) / args.steps) if cuda else None,
            "top": [[e.key[:70], round(getattr(e, field) / total, 3)] for e in ops[:top]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="clip=ViT-B-16,clap=HTSAT-base")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--profile", choices=["fp32", "bf16", "fp32+ckpt", "bf16+ckpt"],
                   help="profile this one configuration instead (one JSON line: device busy time, "
                        "kernels per step, the ops' shares of it)")
    args = p.parse_args(argv)
    import torch

    import avprompt  # noqa: F401  (offline hub before laion_clap)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_dgsct.py: no CUDA GPU visible to torch; run it on a GPU machine "
              "(benchmarks/bench_dgsct.py measures the CPU)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.profile:
        dtype, _, ckpt = args.profile.partition("+")
        print(json.dumps(profile_config(args, dtype, bool(ckpt), device)), flush=True)
        return 0
    model, batch = build(args.backbones, args.batch, args.segments, False, device)
    try:
        flops = count_flops(model, batch)
    except torch.OutOfMemoryError:
        flops = None
    del model, batch
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for dtype, ckpt in CONFIGS:
        try:
            row = run_config(args, dtype, ckpt, device, flops)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            row = {"dtype": dtype, "checkpointing": bool(ckpt), "error": "out of memory"}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
