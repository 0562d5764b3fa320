"""Contrastive pre-training of one tower (image-text or audio-text) on the SynthAV caption corpus.

The wrapped library model (``tower.model``: open_clip CLIP or laion-clap CLAP) is trained directly
through the same code path the benchmark uses at inference: ``tower.encode`` for images/audio and
``tower.text.encode`` for captions, with the library's own learnable temperature (CLIP
``logit_scale``, CLAP ``logit_scale_a``). Loss: symmetric InfoNCE over in-batch negatives. A
SynthAV batch repeats attribute pairs (26 seen colour-shape pairs for 64 images), so targets are
multi-positive: every caption that names the same pair as an item is a positive of that item.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Caption templates: the corpus' own phrasing, the benchmark's prompt templates (avprompt.prompts)
# and the bare words, so zero-shot prompts at evaluation time are in-distribution.
IMAGE_TEMPLATES = ("a {}", "a photo of a {}.", "a video frame of a {}.", "a picture of the {}.", "{}")
AUDIO_TEMPLATES = ("a {}", "This is a sound of {}.", "The sounds of {}", "the sound of a {}.", "{}")
# Largest temperature, as in open_clip / laion-clap training (clamp of log scale at ln 100).
MAX_LOG_SCALE = math.log(100.0)


@dataclass
class PretrainConfig:
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 50
    # probability that a caption also names the other modality's two words (the full class-name form
    # "red star high chime"): the text tower learns to read its own modality's words in class names.
    full_name_prob: float = 0.3
    # probability that a caption names a single word (its positives: all items with that word)
    word_prob: float = 0.3


@dataclass
class TowerData:
    """One modality of the corpus, ready for training.

    inputs: (n, 3, S, S) CLIP-normalised images or (n, samples) waveforms.
    pairs: (n, 2) own-modality attribute words; other: (n, 2) the other modality's words.
    """

    inputs: torch.Tensor
    pairs: list[tuple[str, str]]
    other: list[tuple[str, str]]


def tower_data(corpus: dict, modality: str, tower) -> TowerData:
    """Corpus dict (see ``caption_corpus``) -> the tensors one tower trains or evaluates on."""
    attrs = corpus["attributes"]
    vis = [(a["colour"], a["shape"]) for a in attrs]
    aud = [(a["pitch"], a["timbre"]) for a in attrs]
    if modality == "v":
        x = torch.from_numpy(corpus["images"]).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(tower.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(tower.image_std).view(1, 3, 1, 1)
        return TowerData((x - mean) / std, vis, aud)
    return TowerData(torch.from_numpy(corpus["audio"]).float(), aud, vis)


def add_timbre_items(data: TowerData, timbre: dict) -> TowerData:
    """Audio tower data plus the sounds of ``timbre_corpus`` (pitch word "": unnamed), whose
    captions can only name their timbre (see ``make_captions``)."""
    pairs = [("", a["timbre"]) for a in timbre["attributes"]]
    return TowerData(torch.cat([data.inputs, torch.from_numpy(timbre["audio"]).float()]),
                     data.pairs + pairs, data.other + [("", "")] * len(pairs))


def make_captions(pairs, other, rng: np.random.Generator, modality: str, full_name_prob: float,
                  word_prob: float = 0.0) -> tuple[list[str], list[tuple[str, ...]]]:
    """One random caption per item and the own-modality words it names.

    A template around the item's two words; with ``full_name_prob`` all four words (class-name
    form), with ``word_prob`` only one of its two words ("a photo of a red."): such captions match
    every item sharing that word, which teaches the text tower single words, the basis of zero-shot
    transfer to unseen combinations. An item with an empty (unnamed) word is always captioned by
    its other word alone.
    """
    templates = IMAGE_TEMPLATES if modality == "v" else AUDIO_TEMPLATES
    caps, named = [], []
    for own, oth in zip(pairs, other):
        words, mention = " ".join(own), tuple(own)
        r = rng.random()
        if "" in own:  # unnamed attribute: only the named word can be said
            mention = tuple(w for w in own if w)
            words = " ".join(mention)
        elif r < word_prob:
            mention = (own[int(rng.integers(2))],)
            words = mention[0]
        elif r < word_prob + full_name_prob:
            words = " ".join(own + oth) if modality == "v" else " ".join(oth + own)
        caps.append(templates[int(rng.integers(len(templates)))].format(words))
        named.append(mention)
    return caps, named


def positives(pairs: list[tuple[str, ...]], named: list[tuple[str, ...]]) -> torch.Tensor:
    """(B, B) float: [i, j] = 1 when caption j names only words item i has."""
    return torch.tensor([[float(set(m) <= set(p)) for m in named] for p in pairs])


def multi_positive_infonce(x: torch.Tensor, t: torch.Tensor, keys: list | torch.Tensor,
                           scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with multi-positive targets.

    x: (B, D) image/audio features; t: (B, D) caption features (both L2-normalised); keys: B hashable
    labels (items with equal keys are mutual positives) or a (B, B) positive matrix [item, caption]
    (see ``positives``); scale: exp'd temperature. Each row's target spreads its mass uniformly over
    its positives (exactly CLIP's loss when all keys differ).
    """
    if isinstance(keys, torch.Tensor):
        pos = keys.to(x.device, x.dtype)
    else:
        ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        lab = torch.tensor([ids[k] for k in keys], device=x.device)
        pos = (lab[:, None] == lab[None, :]).to(x.dtype)
    logits = scale * x @ t.t()
    loss_x = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(pos.t() / pos.t().sum(1, keepdim=True) * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return 0.5 * (loss_x + loss_t)


def _scale_param(tower) -> torch.nn.Parameter:
    return tower.model.logit_scale if tower.modality == "v" else tower.model.logit_scale_a


def train_tower(tower, data: TowerData, cfg: PretrainConfig, seed: int,
                deadline: float | None = None, log=print) -> dict:
    """Train ``tower.model`` in place; returns a log dict (losses, steps done, wall time).

    The cosine schedule follows the step fraction, so a run is reproducible for a seed. Only if, after
    a tenth of the steps, the projected end lies past ``deadline`` (time.monotonic()) does it switch
    to max(step fraction, time fraction) so that the learning rate still decays before the deadline,
    where training stops; the log records that switch (``time_bound_from``).
    """
    model = tower.model
    # the STFT / mel filter bank of HTS-AT are fixed signal processing, not weights to learn
    fixed = ("audio_branch.spectrogram_extractor", "audio_branch.logmel_extractor")
    params = {n: p for n, p in model.named_parameters() if not n.startswith(fixed)}
    for p in params.values():
        p.requires_grad_(True)
    model.train()  # nn.Module.train on the library model: HTS-AT's BatchNorm learns input statistics
    decay = [p for n, p in params.items() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in params.items() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))

    def lr_at(step, frac):  # linear warm-up, cosine decay over frac in [0, 1]
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, frac)))

    rng = np.random.default_rng([seed, 7 if tower.modality == "v" else 8])
    scale = _scale_param(tower)
    n = data.inputs.shape[0]
    losses, t0, step, time_bound_from = [], time.monotonic(), 0, None
    check_at = max(1, cfg.warmup, cfg.steps // 10)
    for step in range(cfg.steps):
        now = time.monotonic()
        if deadline is not None and now > deadline:
            log(f"  time budget reached at step {step}/{cfg.steps}")
            break
        if deadline is not None and step == check_at and t0 + (now - t0) / step * cfg.steps > deadline:
            time_bound_from = step
            log(f"  too slow for {cfg.steps} steps before the deadline: schedule follows wall time")
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        if time_bound_from is not None:
            frac = max(frac, (now - t0) / (deadline - t0))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, frac)
        idx = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        pairs = [data.pairs[i] for i in idx]
        caps, named = make_captions(pairs, [data.other[i] for i in idx], rng, tower.modality,
                                    cfg.full_name_prob, cfg.word_prob)
        x = F.normalize(tower.encode(data.inputs[torch.from_numpy(idx)]), dim=-1)
        t = F.normalize(tower.text.encode(caps), dim=-1)
        loss = multi_positive_infonce(x, t, positives(pairs, named), scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            scale.clamp_(0, MAX_LOG_SCALE)
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == cfg.steps - 1:
            rate = (step + 1) * cfg.batch_size / (time.monotonic() - t0)
            log(f"  step {step:5d} loss {np.mean(losses[-50:]):.3f} scale {float(scale.exp()):.1f} "
                f"({rate:.0f} items/s)")
    else:
        step = cfg.steps
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return {"config": asdict(cfg), "steps_done": step, "stopped_early": step < cfg.steps,
            "time_bound_from": time_bound_from,
            "wall_s": round(time.monotonic() - t0, 1),
            "loss_first": float(np.mean(losses[:20])) if losses else None,
            "loss_last": float(np.mean(losses[-50:])) if losses else None}


@torch.no_grad()
def encode_all(tower, inputs: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(n, ...) inputs -> (n, D) L2-normalised features."""
    return torch.cat([F.normalize(tower.encode(inputs[i:i + batch]), dim=-1)
                      for i in range(0, inputs.shape[0], batch)])


@torch.no_grad()
def zero_shot(tower, feats: torch.Tensor, true_names: list[str], class_names: list[str],
              template: str) -> dict:
    """Nearest class text (one template) for each item: accuracy, per-word accuracy, chance.

    feats: (n, D) normalised; true_names: n class names (words separated by spaces, each in
    ``class_names``). Per-word accuracy compares word j of predicted and true names.
    """
    from avprompt.prompts import class_text_features

    text = class_text_features(tower.text, class_names, [template])
    pred = (feats @ text.t()).argmax(1).tolist()
    pred_names = [class_names[p] for p in pred]
    acc = float(np.mean([p == t for p, t in zip(pred_names, true_names)]))
    words = len(true_names[0].split())
    per_word = [float(np.mean([p.split()[j] == t.split()[j] for p, t in zip(pred_names, true_names)]))
                for j in range(words)]
    return {"accuracy": round(acc, 4), "per_word": [round(w, 4) for w in per_word],
            "chance": round(1.0 / len(class_names), 4), "n": len(true_names), "classes": len(class_names)}
