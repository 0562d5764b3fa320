"""DG-SCT training-step benchmark (a script, not a test).

For each backbone spec it measures, each in a fresh worker process so that peak memory is its own:
training step time (forward + loss + backward + Adam step) and peak memory, for DG-SCT as shipped
(frozen CLAP template features cached once) and without that saving (recomputed every step),
and prints the ratio. Random weights; nothing is downloaded.

    python benchmarks/bench_dgsct.py                                  # tiny + full size, CPU
    python benchmarks/bench_dgsct.py --backbones tiny --segments 10 --steps 5
    python benchmarks/bench_dgsct.py --device cuda --bf16 --checkpoint

"full" means ``clip=ViT-B-32,clap=HTSAT-base``. Peak memory: CUDA max allocated on GPU; on CPU the
growth of the process's max resident set during the timed steps (after model build and one warm-up
step), which is what training adds on top of holding the model.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

FULL = "clip=ViT-B-32,clap=HTSAT-base"


def worker(spec: str, segments: int, batch: int, steps: int, device: str, bf16: bool,
           checkpoint: bool, cache_text: bool, threads: int) -> dict:
    import torch

    import avprompt  # noqa: F401
    from avprompt.dgsct.method import DGSCT
    from avprompt.encoders import load_encoders
    from avprompt.task import TaskSpec

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    enc = load_encoders(spec)
    task = TaskSpec("ave", "segment", tuple(f"class {i}" for i in range(28)), num_segments=segments)
    cfg = DGSCT.default_config(cache_text=cache_text, checkpoint_frozen=checkpoint)
    model = DGSCT(enc, task, cfg).to(device).train()
    s = enc.vision.image_size
    g = torch.Generator().manual_seed(0)
    b = {"frames": torch.randn(batch, segments, 3, s, s, generator=g),
         "audio": 0.1 * torch.randn(batch, segments, enc.audio.sample_rate, generator=g),
         "segment_labels": torch.randint(0, 29, (batch, segments), generator=g)}
    b = {k: v.to(device) for k, v in b.items()}
    params = model.trainable_parameters()
    opt = torch.optim.Adam(params, lr=3e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(model(b), b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        return loss.item()

    step()  # warm-up: allocator, Adam state, lazy inits
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    return {"step_s": sorted(times)[len(times) // 2], "peak_mib": peak,
            "trainable_m": sum(p.numel() for p in params) / 1e6}


def run_worker(args, spec: str, segments: int, cache_text: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--backbones", spec, "--segments", str(segments),
           "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device,
           "--threads", str(args.threads)]
    cmd += ["--bf16"] * args.bf16 + ["--checkpoint"] * args.checkpoint + ["--no-cache"] * (not cache_text)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker failed for {spec}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="tiny,full", help="comma list of: tiny, full, or one spec")
    p.add_argument("--segments", type=int, default=0, help="T per clip (0: 10 tiny, 2 full on CPU)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--checkpoint", action="store_true")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        r = worker(args.backbones, args.segments, args.batch, args.steps, args.device, args.bf16,
                   args.checkpoint, not args.no_cache, args.threads)
        print(json.dumps(r))
        return
    specs = [s for s in args.backbones.split(",") if s] if "=" not in args.backbones else [args.backbones]
    print(f"device={args.device} batch={args.batch} steps={args.steps} bf16={args.bf16} "
          f"checkpoint_frozen={args.checkpoint}")
    print(f"{'backbones':<32} {'T':>3} {'trainable':>10} {'step s':>8} {'peak MiB':>9} "
          f"{'no-cache s':>10} {'no-cache MiB':>12} {'time ratio':>10}")
    for name in specs:
        spec = FULL if name == "full" else name
        seg = args.segments or (10 if spec == "tiny" or args.device != "cpu" else 2)
        fast, slow = run_worker(args, spec, seg, True), run_worker(args, spec, seg, False)
        print(f"{spec:<32} {seg:>3} {fast['trainable_m']:>9.2f}M {fast['step_s']:>8.3f} "
              f"{fast['peak_mib']:>9.0f} {slow['step_s']:>10.3f} {slow['peak_mib']:>12.0f} "
              f"{slow['step_s'] / fast['step_s']:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
