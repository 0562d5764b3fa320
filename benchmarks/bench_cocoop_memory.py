"""Peak memory and time per training step: CoCoOp batched/chunked vs a per-sample loop vs CoOp.

CoCoOp gives every sample its own K class prompts, so one step on N = B*T segments needs N x K
text-encoder passes. The reference loops over images and keeps each image's activations for
backward. This benchmark runs one SGD step (cached frozen features, CLIP branch) for:

    coop             CoOp: K prompts per step
    cocoop-loop      CoCoOp, one text pass per sample (the reference's loop), no recomputation
    cocoop-batched   CoCoOp, all N x K prompts in one text pass
    cocoop-chunked   CoCoOp, ``--chunk`` samples per pass, activations recomputed in backward

Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on CPU, the growth of the process's
peak resident set (``resource`` maxrss) during the first step, each variant in a fresh subprocess
so one variant's high-water mark cannot hide another's. Then ``--steps`` more steps are timed.

    python benchmarks/bench_cocoop_memory.py                      # tiny towers, CPU
    python benchmarks/bench_cocoop_memory.py --backbones clip=avp-vit-synthav --batch 8
    python benchmarks/bench_cocoop_memory.py --device cuda --backbones clip=ViT-B-32
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("coop", "cocoop-loop", "cocoop-batched", "cocoop-chunked")


def _maxrss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


def run_variant(args) -> dict:
    """One variant in this process: build, one measured step, ``args.steps`` timed steps."""
    import torch

    import avprompt  # noqa: F401  (offline hub before laion_clap)
    from avprompt.encoders import load_encoders
    from avprompt.registry import get_method
    from avprompt.task import TaskSpec

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    encoders = load_encoders(args.backbones, modalities="v").to(device)
    task = TaskSpec("bench", "segment", tuple(f"class {i}" for i in range(args.classes)), args.segments)
    if args.variant == "coop":
        method = get_method("coop")(encoders, task, get_method("coop").default_config(n_ctx=4))
    else:
        chunk, ckpt = {"cocoop-loop": (1, False), "cocoop-batched": (0, False),
                       "cocoop-chunked": (args.chunk, True)}[args.variant]
        cls = get_method("cocoop")
        method = cls(encoders, task, cls.default_config(chunk_size=chunk, checkpoint=ckpt, checkpoint_min_params=0))
    method.to(device).train()
    g = torch.Generator().manual_seed(0)
    b, t = args.batch, args.segments
    batch = {"feat_v": torch.randn(b, t, encoders.vision.embed_dim, generator=g).to(device),
             "segment_labels": torch.randint(0, task.num_outputs, (b, t), generator=g).to(device)}
    opt = torch.optim.SGD(method.trainable_parameters(), lr=2e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = method.loss(method(batch), batch)
        loss.backward()
        opt.step()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _maxrss_mb()
    step()
    if cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _maxrss_mb() - base
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return {"variant": args.variant, "peak_mb": peak, "step_s": (time.perf_counter() - start) / args.steps,
            "prompts_per_step": task.num_outputs * (1 if args.variant == "coop" else b * t)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="tiny", help="encoder spec (only the CLIP tower is used)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4, help="videos per step (B)")
    p.add_argument("--segments", type=int, default=10, help="segments per video (T)")
    p.add_argument("--classes", type=int, default=28, help="event classes (plus background)")
    p.add_argument("--chunk", type=int, default=4, help="samples per text pass for cocoop-chunked "
                   "(CoCoOp's default chunk_size)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after the measured one")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", choices=VARIANTS, help="run one variant in-process and print JSON")
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    rows = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, *passthrough, "--variant", v],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"variant {v} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    by = {r["variant"]: r for r in rows}
    unit = "MiB allocated" if args.device.startswith("cuda") else "MiB peak RSS growth"
    print(f"backbones={args.backbones} device={args.device} B={args.batch} T={args.segments} "
          f"K={args.classes + 1} chunk={args.chunk}  (memory: {unit})")
    print(f"{'variant':16s} {'prompts':>8s} {'peak MiB':>9s} {'s/step':>8s} {'mem/coop':>9s} "
          f"{'mem/loop':>9s} {'time/loop':>9s}")
    for r in rows:
        def ratio(a, b):
            return f"{a / b:9.2f}" if b > 0 else f"{'n/a':>9s}"
        print(f"{r['variant']:16s} {r['prompts_per_step']:8d} {r['peak_mb']:9.1f} {r['step_s']:8.3f} "
              f"{ratio(r['peak_mb'], by['coop']['peak_mb'])} "
              f"{ratio(r['peak_mb'], by['cocoop-loop']['peak_mb'])} "
              f"{ratio(r['step_s'], by['cocoop-loop']['step_s'])}")


if __name__ == "__main__":
    main()
