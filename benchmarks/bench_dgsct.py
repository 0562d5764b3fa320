"""DG-SCT training-step benchmark (a script, not a test).

For each backbone spec it measures, each in a fresh worker process so that peak memory is its own:
training step time (forward + loss + backward + Adam step) and peak memory, for DG-SCT as shipped
(frozen CLAP template features cached once) and without that saving (recomputed every step),
and prints the ratio. Random weights; nothing is downloaded.

    python benchmarks/bench_dgsct.py                       # ViT-B-32 + HTSAT-tiny, 10 segments, batch 2, CPU
    python benchmarks/bench_dgsct.py --backbones tiny --steps 5

Settings (``SETTINGS``): the reference-style computation (frozen template text features
recomputed every step, the prompt projection psi and eq. 3-4 as written -- 1x1 conv over tokens,
then the Linear; the (N, L, d) spatial product --, no activation checkpointing, fp32), text cached,
the shipped one (text cached, psi and eq. 3-4 in the cheaper orders), and the shipped one with activation checkpointing of the frozen block halves
(``checkpoint_frozen``), of DG-SCT's modules (``checkpoint_modules``) and of both, and the shipped
one with ``audio_pass=clip`` (one audio-tower pass per clip: a different computation); speed-up and
memory are relative to the first, measured in one run. Peak memory: CUDA max allocated on GPU; on
CPU the peak resident memory above the built model's, sampled every 2 ms over the warm-up and
timed steps (what training adds on top of holding the model).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FULL = "clip=ViT-B-32,clap=HTSAT-tiny"


class RssSampler:
    """Peak resident memory (MiB) above the level at ``start``, sampled every 2 ms from
    /proc/self/statm by a thread: ``ru_maxrss`` is a lifetime maximum, so a model build or a first
    step that already reached it would hide the steps' own peak."""

    def __init__(self):
        import os
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.base = 0
        self.running = False

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def start(self):
        import threading
        self.base = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return (max(self.peak, self.rss()) - self.base) / 2**20


def worker(spec: str, segments: int, batch: int, steps: int, device: str, bf16: bool,
           checkpoint: bool, cache_text: bool, threads: int, cheap_order: bool = True,
           audio_pass: str = "segment") -> dict:
    import torch

    import avprompt  # noqa: F401
    from gpu_dgsct import build, timed  # the same model, batch and timed steps as the GPU script

    torch.set_num_threads(threads)
    from avprompt.engine.executors import keep_freed_memory
    keep_freed_memory()  # as the product's worker processes do
    from avprompt.dgsct.modules import CrossModalAttention, PromptProjection
    PromptProjection.cheapest_order = CrossModalAttention.cheapest_order = cheap_order
    model, b = build(spec, batch, segments, checkpoint, torch.device(device), cache_text=cache_text,
                     audio_pass=audio_pass)
    model.train()
    from avprompt.engine import loop

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    sampler = RssSampler().start()  # CPU: the peak of resident memory above the built model's
    # the product's own training loop (Adam 3e-4, clipping 0.5 from DG-SCT's config), one batch
    # per step; a first call warms up kernels, the allocator and Adam's state
    loop.train(model, lambda e: [b], None, 1, torch.device(device))
    step_s = timed(model, b, steps, torch.device(device))
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else sampler.stop()
    params = model.trainable_parameters()
    return {"step_s": step_s, "peak_mib": peak,
            "trainable_m": sum(p.numel() for p in params) / 1e6}


def run_worker(args, spec: str, segments: int, cache_text: bool, cheap_order: bool = True,
               audio_pass: str = "segment") -> dict:
    cmd = [sys.executable, __file__, "--worker", "--backbones", spec, "--segments", str(segments),
           "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device,
           "--threads", str(args.threads)]
    cmd += ["--bf16"] * args.bf16 + ["--checkpoint", args.checkpoint] + ["--no-cache"] * (not cache_text)
    cmd += ["--tokens-first"] * (not cheap_order) + ["--audio-pass", audio_pass]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker failed for {spec}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


#: (name, cache_text, checkpoint_frozen, cheaper orders, audio_pass); the first is the
#: reference-style computation (psi as written: 1x1 conv over tokens, then the Linear; eq. 3-4 as
#: written); the last changes what is computed (one audio pass per clip), not only how
SETTINGS = [("reference-style (text every step, psi and eq. 3-4 as written)", False, "none", False, "segment"),
            ("text cached, psi and eq. 3-4 as written", True, "none", False, "segment"),
            ("shipped (text cached, psi and eq. 3-4 in the cheaper orders)", True, "none", True, "segment"),
            ("shipped + checkpointing of the frozen blocks", True, "frozen", True, "segment"),
            ("shipped + checkpointing of the DG-SCT modules", True, "modules", True, "segment"),
            ("shipped + checkpointing of both", True, "all", True, "segment"),
            ("shipped + audio_pass=clip (one audio pass per clip)", True, "none", True, "clip")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=FULL, help="one spec (default: ViT-B-32 + HTSAT-tiny), or tiny")
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--checkpoint", default="none", choices=["none", "frozen", "modules", "all"])
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--tokens-first", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--audio-pass", default="segment", choices=["segment", "clip"], help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        r = worker(args.backbones, args.segments, args.batch, args.steps, args.device, args.bf16,
                   args.checkpoint, not args.no_cache, args.threads, not args.tokens_first, args.audio_pass)
        print(json.dumps(r))
        return
    spec = FULL if args.backbones == "full" else args.backbones
    print(f"{spec}, {args.segments} segments, batch {args.batch}, {args.steps} timed steps, device={args.device}, "
          f"{args.threads} threads (each setting in its own process, the product's training loop)")
    print(f"{'setting':<48} {'step s':>8} {'peak MiB':>9} {'speed-up':>9} {'memory':>7}")
    base = None
    for name, cache, ckpt, cheap, audio_pass in SETTINGS:
        args.checkpoint = ckpt
        try:
            r = run_worker(args, spec, args.segments, cache, cheap, audio_pass)
        except SystemExit as e:
            if audio_pass == "segment":
                raise
            print(f"{name:<48} n/a: {e}", flush=True)  # e.g. a 1 s audio window (tiny towers)
            continue
        base = base or r
        print(f"{name:<48} {r['step_s']:>8.2f} {r['peak_mib']:>9.0f} {base['step_s'] / r['step_s']:>8.2f}x "
              f"{r['peak_mib'] / max(base['peak_mib'], 1e-9):>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
