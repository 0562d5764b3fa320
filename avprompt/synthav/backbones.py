"""Build the embedded default backbones: SynthAV-pretrained CLIP (ViT) and CLAP (HTS-AT) towers.

``build_backbones`` pre-trains both towers contrastively (``pretrain.py``) on the SEEN split of the
caption corpus, one after the other in one process, with a fixed number of steps (reproducible for
a seed; a wall-time budget only guards against a very slow machine and is recorded if it bites).
It then measures zero-shot accuracy on fresh seen and HELD-OUT attribute combinations (several
evaluation seeds, per attribute, against chance) and on the AVE/LLP-format target class names, and
writes ``synthav-clip.safetensors``, ``synthav-clap.safetensors`` (fp16; the loader casts back to
the model's fp32) and ``synthav-manifest.json``. Entry point for the CLI:
``avprompt backbones build --world synthav [--out DIR] [--seed N]`` -> ``main(argv)``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import avprompt
from avprompt.encoders.factory import ASSETS, SYNTHAV_10S_DIR
from avprompt.synthav.pretrain import PretrainConfig, encode_all, tower_data, train_tower, zero_shot


@dataclass(frozen=True)
class BuildPlan:
    """Everything that fixes the result of a build besides the seed."""

    clip_arch: str
    clap_arch: str
    clip: PretrainConfig
    clap: PretrainConfig
    train_items: int  # seen-split corpus items (images and sounds) used for training
    eval_items: int  # items per evaluation corpus (seen / held-out, per evaluation seed)
    eval_seeds: int  # number of evaluation corpora (different corpus seeds)
    threads: int = 2
    # extra sounds for the audio tower (``corpus.timbre_corpus``): every timbre at unnamed pitches,
    # so timbre is learnt apart from pitch (without them: 21% zero-shot on the AVE class names)
    timbre_items: int = 0
    towers: tuple[str, ...] = ("clip", "clap")  # what the plan builds (others come from --out)


# Step counts chosen from measured throughput on an idle 2-core CPU so that both towers, corpus
# generation and evaluation fit in about 12 minutes.
# The audio tower at lr 5e-4 with 3,000 timbre items (measured, seed 0, zero-shot on the AVE class
# names): lr 1e-3 without timbre items 21%; 1e-3 with them 49% (1,000 steps) / 14% (2,000 steps,
# unstable); 5e-4 with them 73%.
FULL = BuildPlan("avp-vit-synthav", "avp-htsat-synthav",
                 PretrainConfig(steps=1100, batch_size=64, lr=1e-3),
                 PretrainConfig(steps=1000, batch_size=64, lr=5e-4),
                 train_items=6000, eval_items=300, eval_seeds=3, timbre_items=3000)
# Share of the wall-time budget (from the start of the build) by which each tower's training ends.
DEADLINE_SHARE = {"clip": 0.5, "clap": 0.9}
# Test-sized build: tiny towers, a few steps (checks the loss falls and files reload).
QUICK = BuildPlan("avp-vit-tiny", "avp-htsat-tiny",
                  PretrainConfig(steps=30, batch_size=32, lr=2e-3, warmup=5),
                  PretrainConfig(steps=30, batch_size=32, lr=2e-3, warmup=5),
                  train_items=256, eval_items=48, eval_seeds=1, timbre_items=64)
# The clip-length audio tower (avp-htsat-synthav-10s) for measuring ``audio_pass=clip`` on SynthAV:
# same recipe as FULL's audio tower on 10 s windows; fewer items because each is ten times longer
# (4,000 + 2,000 items of 10 s = 3.8 GB of float32 waveforms).
CLAP_10S = BuildPlan("avp-vit-synthav", "avp-htsat-synthav-10s", FULL.clip, FULL.clap,
                     train_items=4000, eval_items=300, eval_seeds=3, timbre_items=2000, towers=("clap",))
PLANS = {"full": FULL, "quick": QUICK, "clap-10s": CLAP_10S}
PLAN_DIRS = {"full": ASSETS, "quick": ASSETS, "clap-10s": SYNTHAV_10S_DIR}

FILES = {"clip": "synthav-clip.safetensors", "clap": "synthav-clap.safetensors",
         "manifest": "synthav-manifest.json"}
TEMPLATE = {"v": "a photo of a {}.", "a": "This is a sound of {}."}


def corpus_hash(corpus: dict) -> str:
    """sha256 over the corpus arrays and captions (identifies the training data)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(corpus["images"]).tobytes())
    h.update(np.ascontiguousarray(corpus["audio"]).tobytes())
    h.update("\n".join(corpus["captions"]).encode())
    return h.hexdigest()


def save_tower(tower, path: Path) -> int:
    """Float tensors stored as fp16 (the loader's load_state_dict casts back). Returns file bytes."""
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous().clone()
             for k, v in tower.model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "arch": tower.arch})
    return path.stat().st_size


def _stats(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
            "values": [round(v, 4) for v in values]}


def evaluate_tower(tower, modality: str, evals: list[dict]) -> dict:
    """Zero-shot accuracy of one tower on seen / held-out pairs and AVE/LLP target class names."""
    from avprompt.synthav.vocab import AVE_KINDS, COLOURS, LLP_KINDS, PITCHES, SHAPES, TIMBRES

    words = ("colour", "shape") if modality == "v" else ("pitch", "timbre")
    grid = [f"{a} {b}" for a in (COLOURS if modality == "v" else PITCHES)
            for b in (SHAPES if modality == "v" else TIMBRES)]
    template = TEMPLATE[modality]
    runs: dict[str, list[dict]] = {"seen": [], "heldout": [], "ave": [], "llp": []}
    for ev in evals:
        for split in ("seen", "heldout"):
            data = tower_data(ev[split], modality, tower)
            feats = encode_all(tower, data.inputs)
            runs[split].append(zero_shot(tower, feats, [" ".join(p) for p in data.pairs], grid, template))
            if split != "heldout":
                continue
            for name, kinds in (("ave", AVE_KINDS), ("llp", LLP_KINDS)):
                by_pair = {(k.visual if modality == "v" else k.audio): k.name for k in kinds}
                keep = [i for i, p in enumerate(data.pairs) if p in by_pair]
                truth = [by_pair[data.pairs[i]] for i in keep]
                runs[name].append(zero_shot(tower, feats[keep], truth, [k.name for k in kinds], template))
    out = {"template": template}
    for key, rs in runs.items():
        off = 0 if modality == "v" or key in ("seen", "heldout") else 2  # audio words of class names
        out[key] = {"classes": rs[0]["classes"], "chance": rs[0]["chance"], "items": sum(r["n"] for r in rs),
                    "accuracy": _stats([r["accuracy"] for r in rs]),
                    "per_attribute": {w: _stats([r["per_word"][off + j] for r in rs])
                                      for j, w in enumerate(words)}}
    return out


def build_backbones(out_dir: str | Path = ASSETS, minutes_budget: float = 14.0, seed: int = 0,
                    quick: bool = False, log=print, plan: BuildPlan | None = None,
                    towers: tuple[str, ...] | None = None) -> dict:
    """Pre-train the towers, evaluate, write weights + manifest into ``out_dir``; return the manifest.

    ``plan`` overrides FULL/QUICK (e.g. ``dataclasses.replace(FULL, train_items=...)``).
    ``towers``: which to (re)build (default: the plan's); a tower of the plan left out keeps its
    file and manifest entry in ``out_dir`` (which must then hold a manifest), each entry naming the
    command that built it.
    """
    from avprompt.encoders import load_encoders
    from avprompt.synthav.corpus import caption_corpus, timbre_corpus
    from avprompt.synthav.pretrain import add_timbre_items

    plan = plan or (QUICK if quick else FULL)
    towers = plan.towers if towers is None else towers
    out_dir = Path(out_dir)
    bad = [t for t in towers if t not in plan.towers]
    if bad or not towers:
        raise ValueError(f"--towers {','.join(towers)}: this plan builds {','.join(plan.towers)}")
    kept = {}
    if set(towers) != set(plan.towers):
        old = out_dir / FILES["manifest"]
        if not old.is_file():
            raise ValueError(f"--towers {','.join(towers)}: {old} does not exist; the towers not rebuilt are "
                             "taken from an earlier build there (build both towers first)")
        kept = {k: v for k, v in json.loads(old.read_text())["towers"].items() if k not in towers}
        kept = {k: {"command": json.loads(old.read_text()).get("command"), **v} for k, v in kept.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    t_start = time.monotonic()
    try:
        torch.manual_seed(seed)
        probe = load_encoders(f"clip={plan.clip_arch},clap={plan.clap_arch}")
        size, rate = probe.vision.image_size, probe.audio.sample_rate
        seconds = probe.audio.clip_samples / rate
        log(f"corpus: {plan.train_items} seen items ({size} px, {rate} Hz, {seconds:g} s)")
        train = caption_corpus(plan.train_items, seed, size, rate, seconds, split="seen")
        timbre = timbre_corpus(plan.timbre_items, seed, rate, seconds)
        evals = [{s: caption_corpus(plan.eval_items, 1000 + seed * 10 + e, size, rate, seconds, split=s)
                  for s in ("seen", "heldout")} for e in range(plan.eval_seeds)]
        named = [k for k, v in PLANS.items() if v == plan and k not in ("full", "quick")]
        command = (f"avprompt backbones build --world synthav --out {out_dir} --seed {seed} "
                   f"--minutes {minutes_budget:g}" + (" --quick" if quick else "")
                   + (f" --plan {named[0]}" if named else "")
                   + ("" if set(towers) == set(plan.towers) else f" --towers {','.join(towers)}"))
        manifest = {
            "world": "synthav", "seed": seed, "quick": quick, "command": command,
            "corpus": {"train_items": plan.train_items, "split": "seen", "seed": seed,
                       "sha256": corpus_hash(train), "image_size": size, "sample_rate": rate,
                       "seconds": seconds, "timbre_items": plan.timbre_items,
                       "timbre_sha256": hashlib.sha256(timbre["audio"].tobytes()).hexdigest(),
                       "eval": {"items_per_split": plan.eval_items,
                                "seeds": [1000 + seed * 10 + e for e in range(plan.eval_seeds)]}},
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "avprompt": getattr(avprompt, "__version__", "unknown"), "threads": plan.threads},
            "minutes_budget": minutes_budget, "towers": dict(kept),
        }
        for kind, arch, cfg, modality in (("clip", plan.clip_arch, plan.clip, "v"),
                                          ("clap", plan.clap_arch, plan.clap, "a")):
            if kind not in towers:
                continue
            torch.manual_seed(seed)
            spec = f"{kind}={arch}"
            enc = load_encoders(spec, modalities=modality)
            tower = enc.vision if modality == "v" else enc.audio
            log(f"{kind}: training {arch} ({sum(p.numel() for p in tower.model.parameters()) / 1e6:.2f}M "
                f"parameters) for {cfg.steps} steps")
            data = tower_data(train, modality, tower)
            if modality == "a" and plan.timbre_items:
                data = add_timbre_items(data, timbre)
            train_log = train_tower(tower, data, cfg, seed,
                                    t_start + 60 * minutes_budget * DEADLINE_SHARE[kind], log)
            t_eval = time.monotonic()
            scores = evaluate_tower(tower, modality, evals)
            path = out_dir / FILES[kind]
            nbytes = save_tower(tower, path)
            manifest["towers"][kind] = {
                "command": command, "arch": arch, "file": path.name, "bytes": nbytes, "storage": "float16",
                "parameters": sum(p.numel() for p in tower.model.parameters()),
                "train": train_log, "eval_wall_s": round(time.monotonic() - t_eval, 1),
                "logit_scale": round(float(tower.logit_scale), 3), "zero_shot": scores}
            log(f"{kind}: seen {scores['seen']['accuracy']['mean']:.3f} held-out "
                f"{scores['heldout']['accuracy']['mean']:.3f} (chance {scores['seen']['chance']:.3f}), "
                f"AVE {scores['ave']['accuracy']['mean']:.3f} LLP {scores['llp']['accuracy']['mean']:.3f} "
                f"(chance {scores['ave']['chance']:.3f}); {nbytes / 1e6:.1f} MB")
        manifest["wall_s"] = round(time.monotonic() - t_start, 1)
        manifest["total_bytes"] = sum(t["bytes"] for t in manifest["towers"].values())
        (out_dir / FILES["manifest"]).write_text(json.dumps(manifest, indent=1) + "\n")
        log(f"wrote {out_dir} in {manifest['wall_s']:.0f} s")
        return manifest
    finally:
        torch.set_num_threads(old_threads)


def main(argv: list[str] | None = None) -> int:
    """``avprompt backbones build --world synthav [--out DIR] [--seed N] [--quick] [--minutes M]``."""
    ap = argparse.ArgumentParser(prog="avprompt backbones build",
                                 description="pre-train the embedded SynthAV CLIP/CLAP backbones")
    ap.add_argument("--world", default="synthav")
    ap.add_argument("--out", default=None, help="default: the plan's folder in the package's assets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny towers, a few steps (a smoke test)")
    ap.add_argument("--minutes", type=float, default=14.0, help="wall-time guard for the whole build")
    ap.add_argument("--plan", default="full", choices=sorted(PLANS),
                    help="full: the default towers; clap-10s: the 10 s-window audio tower (avprompt/assets/synthav-10s)")
    ap.add_argument("--towers", default=None,
                    help="towers to (re)build: clip, clap or clip,clap (default: the plan's); the others are kept from --out")
    args = ap.parse_args(argv)
    if args.world != "synthav":
        print(f"error: --world {args.world!r}: only 'synthav' has a pre-training corpus", file=sys.stderr)
        return 2
    # flush each line: the build is long and usually runs with its output sent to a log file
    try:
        plan = PLANS["quick" if args.quick else args.plan]
        towers = plan.towers if args.towers is None else tuple(t.strip() for t in args.towers.split(",") if t.strip())
        build_backbones(args.out or PLAN_DIRS[args.plan], args.minutes, args.seed, args.quick, log=lambda s: print(s, flush=True),
                        plan=plan, towers=towers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
