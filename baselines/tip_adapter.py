"""Tip-Adapter and Tip-Adapter-F (Zhang et al. 2022, gaopengcuhk/Tip-Adapter ``main.py``, ``utils.py``).

Per branch (CLIP frames ``v``, CLAP audio ``a``; ``av`` averages the two branches' logits), with f
the L2-normalised frozen embedding (B, T, D) of each segment::

    A = f @ keys.T                                  (B, T, N_keys)  keys: L2-normalised shots
    cache = exp(-beta * (1 - A)) @ values           (B, T, K)       values: one-hot labels
    logits = s * f @ W_text.T + alpha * cache       (B, T, K)

``s`` is the tower's own logit scale (100 for pre-trained CLIP, the reference's constant; CLAP's
learned scale for the audio branch); ``text_logit_scale > 0`` fixes it instead. Keys: segment-level
tasks store every labelled training segment (background segments included: background is a class);
video-level tasks store one key per video, the normalised mean of its segment embeddings. The
reference averages 10 augmented views per shot; features here come from the frozen-feature cache
(one un-augmented view).

``fit(train, val)`` builds the cache from the training features and grid-searches alpha and beta
on the validation features (never the test split), per branch, on the reference's grid (beta in
[0.1, 12), 200 steps; alpha in [0.1, 5), 20 steps). Before ``fit`` the cache holds one key per
class, its text feature, so an unfitted model is well defined.

Tip-Adapter-F makes the keys a learnable ``Linear`` initialised from the cache and trains it with
AdamW (lr 1e-3, eps 1e-4) for 20 epochs with a cosine schedule. The reference searches alpha/beta
again after fine-tuning and keeps the best test epoch; here both are chosen once, on validation
features before fine-tuning, and the last epoch is evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.method_bases import ZeroShotBase, ZeroShotConfig
from avprompt.registry import register_method


@dataclass
class TipAdapterConfig(ZeroShotConfig):
    alpha: float = 1.0  # residual weight of the cache logits (used as is when search is off)
    beta: float = 1.0  # sharpness of the affinity
    search: bool = True  # grid-search alpha/beta on validation features in fit()
    search_beta_max: float = 12.0
    search_beta_steps: int = 200
    search_alpha_max: float = 5.0
    search_alpha_steps: int = 20
    text_logit_scale: float = 0.0  # 0: the tower's logit scale; > 0: this constant (reference: 100)


@dataclass
class TipAdapterFConfig(TipAdapterConfig):
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2  # torch AdamW default; the reference passes none
    schedule: str = "cosine"
    warmup_epochs: int = 0
    epochs: int = 20
    batch_size: int = 256
    grad_clip: float = 0.0  # the reference does not clip


def labelled_samples(features: dict, task, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised samples and labels of one branch.

    Segment tasks: every segment whose label is a valid output ``(N*T, D)``; video tasks: the
    normalised mean of each video's normalised segment embeddings ``(N, D)`` with ``label``.
    """
    key = "feat_" + modality
    if key not in features:
        raise ValueError(f"{task.name}: fit features lack {key!r} (the {modality} branch's frozen embeddings)")
    f = F.normalize(features[key].float(), dim=-1)
    if task.level == "segment":
        if "segment_labels" not in features:
            raise ValueError(f"{task.name}: fit features lack 'segment_labels'")
        x, y = f.flatten(0, 1), features["segment_labels"].flatten().long().to(f.device)
        keep = (y >= 0) & (y < task.num_outputs)
        return x[keep], y[keep]
    if "label" not in features:
        raise ValueError(f"{task.name}: fit features lack 'label'")
    return F.normalize(f.mean(dim=1), dim=-1), features["label"].long().to(f.device)


def accuracy(logits: torch.Tensor, features: dict, task) -> float:
    """Top-1 accuracy of (N, T, K) segment logits, read the way the task reads them."""
    if task.level == "segment":
        y = features["segment_labels"].to(logits.device).flatten()
        pred = logits.flatten(0, 1).argmax(-1)
        keep = (y >= 0) & (y < task.num_outputs)
        return float((pred[keep] == y[keep]).float().mean()) if keep.any() else 0.0
    return float((logits.mean(dim=1).argmax(-1) == features["label"].to(logits.device)).float().mean())


@register_method("tip-adapter")
class TipAdapter(ZeroShotBase):
    description = "Tip-Adapter: training-free few-shot key-value cache on frozen embeddings, per branch"
    config_class = TipAdapterConfig
    supported_modalities = ("v", "a", "av")
    #: ``fit`` builds the cache and searches alpha/beta; nothing is trained by gradient descent.
    kind = "fit"
    runs_on = "features"
    learn_keys: ClassVar[bool] = False

    def __init__(self, encoders, task, config: TipAdapterConfig):
        super().__init__(encoders, task, config)
        self.cache_keys = nn.ModuleDict()
        for m in self.modalities:
            if config.text_logit_scale > 0:
                old = getattr(self, f"scale_{m}")
                setattr(self, f"scale_{m}", torch.full_like(old, float(config.text_logit_scale)))
            text = getattr(self, f"text_{m}")  # (K, D): the unfitted cache, one key per class
            self.cache_keys[m] = nn.Linear(text.shape[1], text.shape[0], bias=False)
            dev = text.device
            self.register_buffer(f"values_{m}", torch.eye(task.num_outputs, device=dev))
            self.register_buffer(f"alpha_{m}", torch.tensor(float(config.alpha), device=dev))
            self.register_buffer(f"beta_{m}", torch.tensor(float(config.beta), device=dev))
            self.set_cache(m, text, torch.eye(task.num_outputs))

    # ----- the cache -------------------------------------------------------------------------
    def set_cache(self, m: str, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace branch m's cache: keys (N_keys, D), values (N_keys, K)."""
        lin = self.cache_keys[m]
        dev = getattr(self, f"values_{m}").device
        lin.weight = nn.Parameter(keys.detach().float().to(dev).clone(), requires_grad=self.learn_keys)
        lin.out_features, lin.in_features = keys.shape
        setattr(self, f"values_{m}", values.detach().float().to(dev).clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A fitted cache's size is known only at fit time: resize to the incoming one first.
        for m in self.modalities:
            w, v = state_dict.get(f"{prefix}cache_keys.{m}.weight"), state_dict.get(f"{prefix}values_{m}")
            if w is not None and v is not None and w.shape != self.cache_keys[m].weight.shape:
                self.set_cache(m, torch.zeros(w.shape), torch.zeros(v.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def branch_logits(self, f: torch.Tensor, m: str, alpha=None, beta=None) -> torch.Tensor:
        """(B, T, D) frozen embeddings -> (B, T, K) Tip-Adapter logits of branch m."""
        f = F.normalize(f.float(), dim=-1)
        clip = getattr(self, f"scale_{m}") * f @ getattr(self, f"text_{m}").T
        alpha = getattr(self, f"alpha_{m}") if alpha is None else alpha
        beta = getattr(self, f"beta_{m}") if beta is None else beta
        affinity = self.cache_keys[m](f)  # (B, T, N_keys)
        cache = torch.exp(-beta * (1.0 - affinity)) @ getattr(self, f"values_{m}")
        return clip + alpha * cache

    def segment_logits(self, batch):
        return torch.stack([self.branch_logits(self.features(batch, m), m) for m in self.modalities]).mean(0)

    # ----- fitting ---------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, train_features: dict, val_features: dict | None) -> dict:
        """Build the cache from ``train_features``; search alpha/beta on ``val_features``.

        Both dicts hold ``feat_v``/``feat_a`` (N, T, D) and the task's label keys. Returns the
        selected values per branch (``alpha_v``, ``beta_v``, ``cache_size_v``, ``val_accuracy_v``).
        """
        out: dict = {}
        k = self.task.num_outputs
        for m in self.modalities:
            x, y = labelled_samples(train_features, self.task, m)
            if len(y) == 0:
                raise ValueError(f"{self.key}: the training features hold no labelled sample for the cache")
            self.set_cache(m, x, F.one_hot(y, k).float())
            out[f"cache_size_{m}"] = int(len(y))
            if self.config.search and val_features and ("feat_" + m) in val_features:
                a, b, acc = self._search(val_features, m)
                getattr(self, f"alpha_{m}").fill_(a)
                getattr(self, f"beta_{m}").fill_(b)
                out[f"val_accuracy_{m}"] = acc
            out[f"alpha_{m}"] = float(getattr(self, f"alpha_{m}"))
            out[f"beta_{m}"] = float(getattr(self, f"beta_{m}"))
        return out

    def _search(self, val: dict, m: str) -> tuple[float, float, float]:
        """The reference grid; the first best (beta, alpha) wins, as in the reference."""
        c = self.config
        betas = [i * (c.search_beta_max - 0.1) / c.search_beta_steps + 0.1 for i in range(c.search_beta_steps)]
        alphas = [i * (c.search_alpha_max - 0.1) / c.search_alpha_steps + 0.1 for i in range(c.search_alpha_steps)]
        dev = getattr(self, f"values_{m}").device
        f = F.normalize(val["feat_" + m].float().to(dev), dim=-1)
        clip = getattr(self, f"scale_{m}") * f @ getattr(self, f"text_{m}").T
        affinity = self.cache_keys[m](f)
        values = getattr(self, f"values_{m}")
        best = (-1.0, float(c.alpha), float(c.beta))
        for beta in betas:
            cache = torch.exp(-beta * (1.0 - affinity)) @ values
            for alpha in alphas:
                acc = accuracy(clip + alpha * cache, val, self.task)
                if acc > best[0]:
                    best = (acc, alpha, beta)
        return best[1], best[2], best[0]


@register_method("tip-adapter-f")
class TipAdapterF(TipAdapter):
    description = "Tip-Adapter-F: Tip-Adapter with the cache keys fine-tuned (AdamW, 20 epochs)"
    config_class = TipAdapterFConfig
    kind = "fit-then-train"  # fit builds the cache, then the engine fine-tunes the keys
    learn_keys: ClassVar[bool] = True
