"""DG-SCT on one GPU: step time and peak memory, fp32 vs bf16 autocast vs activation checkpointing.

ViT-B-32 + HTSAT-base (random weights), AVE-like task (28 classes + background), batch 2 x 10
segments, Adam. Run as is on a machine with a CUDA GPU:

    python benchmarks/gpu_dgsct.py [--steps 5]

Each setting runs in its own worker process (benchmarks/bench_dgsct.py), so peak memory
(``torch.cuda.max_memory_allocated``) belongs to that setting alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dgsct import FULL, run_worker  # noqa: E402

SETTINGS = [("fp32", False, False), ("bf16", True, False), ("fp32 + checkpoint", False, True),
            ("bf16 + checkpoint", True, True)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("gpu_dgsct.py needs a CUDA GPU; use bench_dgsct.py on CPU")
    print(f"{torch.cuda.get_device_name(0)}  {FULL}  batch {args.batch} x {args.segments} segments")
    print(f"{'setting':<20} {'step s':>8} {'peak MiB':>9}")
    for name, bf16, ckpt in SETTINGS:
        ns = argparse.Namespace(batch=args.batch, steps=args.steps, device="cuda", threads=8,
                                bf16=bf16, checkpoint=ckpt)
        r = run_worker(ns, FULL, args.segments, cache_text=True)
        print(f"{name:<20} {r['step_s']:>8.3f} {r['peak_mib']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
