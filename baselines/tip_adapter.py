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

``fit(train, val, score)`` builds the cache from the training features and grid-searches alpha and
beta on the validation features (never the test split) on the reference's grid (beta in [0.1, 12),
200 steps; alpha in [0.1, 5), 20 steps). Before ``fit`` the cache holds one key per class, its text
feature, so an unfitted model is well defined.

Selection. With the engine's ``score`` (the task's primary metric on validation, higher is better;
``avprompt.method.Method.fit``), every candidate is rated by ``score`` of the method's whole forward
output on the validation features -- for ``av`` the late-fused output the evaluator scores, for
video tasks the mean over segments. One search is the default (the configured ``alpha``/``beta``,
the reference's init values) followed by the grid in the reference's order (beta outer, alpha
inner); a candidate replaces the best only when it scores strictly higher, so the default wins
when it ties the best and otherwise the first best in grid order wins (a NaN score counts as the
worst). ``av`` has a pair per branch; the joint grid (4001**2 = 16M scored outputs: hours even for
AVE's ~1 ms primary metric) is out of reach, so it is searched coordinate-wise: (1) each branch
alone (its own output, scored by ``score``); that start is kept when its fused output scores
higher than every branch at the default, else the defaults are the start; (2) rounds on the fused
output: branch v's pair re-searched with a's held fixed, then a's with v's held fixed, ...; this
stops when a search changes nothing after both were searched (each branch is the best given the
other) or after ``search_passes`` rounds (default 2). At most 6 searches of 4001 outputs; the fused
score never decreases in (2) and never ends below the all-default one. Coordinate ascent can stop
at a local optimum of the joint grid. ``fit`` returns the selected pairs, ``val_primary`` (the
score of the selected model's output), ``val_primary_default`` (every branch at the default),
``val_primary_per_branch`` (av: the per-branch start), ``search_rounds`` (the searches on the
final output) and ``search_evaluations`` (calls of ``score``).

Without ``score`` (plug-in callers, tests) the old rule stands: each branch alone, on primary-label
accuracy, first best wins (``val_accuracy_{m}``).

Tip-Adapter-F makes the keys a learnable ``Linear`` initialised from the cache and trains it with
AdamW (lr 1e-3, eps 1e-4) for 20 epochs with a cosine schedule, as the reference does: fine-tuning
runs at the initial alpha/beta (the config's, the reference's ``init_alpha``/``init_beta``), the
engine's loop selects the epoch on the validation primary metric like every trained method (the
reference keeps the best *test* epoch), and alpha/beta are then searched on the fine-tuned cache
(``after_training``, the reference's second ``search_hp``; same rules as Tip-Adapter's search, on
validation). An earlier version searched before fine-tuning and kept that pair: the searched cache
was then the initial state, and on validation fine-tuning rarely beat it (a third of the cells
"did not learn"), which measured the search, not the fine-tuning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avprompt.method_bases import ZeroShotBase, ZeroShotConfig
from avprompt.registry import register_method

#: Memory for the per-beta cache terms kept across the av coordinate searches (else recomputed).
CACHE_MEMO_BYTES = 2**30


@dataclass
class TipAdapterConfig(ZeroShotConfig):
    alpha: float = 1.0  # residual weight of the cache logits (used as is when search is off)
    beta: float = 1.0  # sharpness of the affinity
    search: bool = True  # grid-search alpha/beta on validation features in fit()
    search_beta_max: float = 12.0
    search_beta_steps: int = 200
    search_alpha_max: float = 5.0
    search_alpha_steps: int = 20
    search_passes: int = 2  # av with a score: at most this many coordinate-wise rounds over the branches
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
    # The reference's AdamW lr (1e-3) comes with ~1,250 steps (ImageNet 16 shots: 16,000 images,
    # batch 256, 20 epochs); a few-shot audio-visual split gives 20-200 steps, in which the keys
    # barely move (measured: a flat validation curve at x1), so x1/x10/x100 are tried on validation.
    lr_search: tuple[float, ...] = (1.0, 10.0, 100.0)


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
    cost_seconds = (0.27, 0.0012)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)
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
    def fit(self, train_features: dict, val_features: dict | None,
            score: Callable | None = None) -> dict:
        """Build the cache from ``train_features``; search alpha/beta on ``val_features``.

        Both dicts hold ``feat_v``/``feat_a`` (N, T, D) and the task's label keys. With ``score``
        (see the module docstring) the search rates the method's full (fused) forward output and
        returns ``val_primary``, ``val_primary_default``, ``search_evaluations`` and
        ``search_rounds``; without it, each branch is searched alone on primary-label accuracy
        (``val_accuracy_{m}``). Always returns ``alpha_{m}``, ``beta_{m}``, ``cache_size_{m}``.
        """
        out: dict = {}
        k = self.task.num_outputs
        for m in self.modalities:
            x, y = labelled_samples(train_features, self.task, m)
            if len(y) == 0:
                raise ValueError(f"{self.key}: the training features hold no labelled sample for the cache")
            self.set_cache(m, x, F.one_hot(y, k).float())
            out[f"cache_size_{m}"] = int(len(y))
        return {**out, **self.select_alpha_beta(val_features, score)}

    @torch.no_grad()
    def select_alpha_beta(self, val_features: dict | None, score: Callable | None = None) -> dict:
        """Search every branch's alpha/beta on ``val_features`` for the current cache (``fit``'s
        rules, module docstring); returns the selected values and what the search measured."""
        out: dict = {}
        scored = score is not None and _has_rows(val_features, self.modalities)
        if scored and self.config.search:
            out.update(self._search_scored(val_features, score))
        elif scored:
            out["val_primary"] = float(score(self._output(
                [self.branch_logits(val_features["feat_" + m].to(self._device), m) for m in self.modalities])))
        elif self.config.search and val_features:
            for m in self.modalities:
                if ("feat_" + m) in val_features:
                    a, b, acc = self._search(val_features, m)
                    getattr(self, f"alpha_{m}").fill_(a)
                    getattr(self, f"beta_{m}").fill_(b)
                    out[f"val_accuracy_{m}"] = acc
        for m in self.modalities:
            out[f"alpha_{m}"] = float(getattr(self, f"alpha_{m}"))
            out[f"beta_{m}"] = float(getattr(self, f"beta_{m}"))
        return out

    @property
    def _device(self) -> torch.device:
        return getattr(self, f"values_{self.modalities[0]}").device

    def grid(self) -> tuple[list[float], list[float]]:
        """The reference's (betas, alphas) search grid."""
        c = self.config
        betas = [i * (c.search_beta_max - 0.1) / c.search_beta_steps + 0.1 for i in range(c.search_beta_steps)]
        alphas = [i * (c.search_alpha_max - 0.1) / c.search_alpha_steps + 0.1 for i in range(c.search_alpha_steps)]
        return betas, alphas

    def _output(self, branch_logits: list[torch.Tensor]):
        """What ``forward`` returns for these per-branch (N, T, K) logits, as a CPU float32 array."""
        seg = torch.stack(branch_logits).mean(0)
        if self.task.level != "segment":
            seg = seg.mean(dim=1)
        return seg.float().cpu().numpy()

    def _search_scored(self, val: dict, score: Callable) -> dict:
        """Every branch's (alpha, beta) on ``score`` of the method's output (module docstring)."""
        c, mods = self.config, self.modalities
        betas, alphas = self.grid()
        default = (float(c.alpha), float(c.beta))
        parts = {}  # per branch: (text logits, 1 - affinity, values) on the validation features
        for m in mods:
            f = F.normalize(val["feat_" + m].float().to(self._device), dim=-1)
            parts[m] = (getattr(self, f"scale_{m}") * f @ getattr(self, f"text_{m}").T,
                        1.0 - self.cache_keys[m](f), getattr(self, f"values_{m}"))
        evaluations, first = 0, []
        # av searches each branch 2-3 times: keep every beta's cache term (the costly part: an exp
        # over validation segments x keys) when they fit in CACHE_MEMO_BYTES
        n_betas = len(betas) + 1
        memo = ({m: {} for m in mods} if len(mods) > 1 and sum(
            n_betas * parts[m][0].numel() * 4 for m in mods) <= CACHE_MEMO_BYTES else None)

        def cache_term(m, beta):
            if memo is not None and beta in memo[m]:
                return memo[m][beta]
            cache = torch.exp(-beta * parts[m][1]) @ parts[m][2]
            if memo is not None:
                memo[m][beta] = cache
            return cache

        def logits(m, alpha, beta, cache=None):
            return parts[m][0] + alpha * (cache_term(m, beta) if cache is None else cache)

        def rate(branch_logits: list) -> tuple[float, float]:
            """(rank key, score) of the output these branch logits make; NaN ranks worst."""
            nonlocal evaluations
            evaluations += 1
            s = float(score(self._output(branch_logits)))
            first[:] = first or [s]  # the first output rated has every branch at the default
            return (-math.inf if math.isnan(s) else s), s

        def search(m, fixed: dict) -> tuple[float, float, float, float]:
            """Branch m's best (key, score, alpha, beta) with the branches in ``fixed`` held at their
            logits (``{}``: branch m alone). The default first, then the grid; strictly better wins."""
            best = None
            for beta, alpha_list in [(default[1], [default[0]])] + [(b, alphas) for b in betas]:
                cache = cache_term(m, beta)
                for alpha in alpha_list:
                    key, s = rate([logits(m, alpha, beta, cache) if o == m else fixed[o]
                                   for o in mods if o == m or o in fixed])
                    if best is None or key > best[0]:
                        best = (key, s, alpha, beta)
            return best

        out = {}
        if len(mods) == 1:
            best = search(mods[0], {})
            current = {mods[0]: best[2:]}
            out.update(val_primary=best[1], search_rounds=1)
        else:
            # 1. the fused output with every branch at the default
            default_key, _ = rate([logits(m, *default) for m in mods])
            # 2. each branch alone; kept as the start only if its fused output beats the defaults
            alone = {m: search(m, {})[2:] for m in mods}
            alone_key, out["val_primary_per_branch"] = rate([logits(m, *alone[m]) for m in mods])
            current = alone if alone_key > default_key else {m: default for m in mods}
            # 3. coordinate-wise rounds on the fused output, the other branches held fixed
            searches, unchanged_run, searched = 0, 0, set()
            for m in [m for _ in range(max(1, int(c.search_passes))) for m in mods]:  # v, a, v, a
                best = search(m, {o: logits(o, *current[o]) for o in mods if o != m})
                changed = best[2:] != current[m]
                current[m] = best[2:]
                searches += 1
                searched.add(m)
                unchanged_run = 0 if changed else unchanged_run + 1
                # converged: each branch is the best given the others' current pairs
                if len(searched) == len(mods) and unchanged_run >= len(mods) - 1:
                    break
            out.update(val_primary=best[1], search_rounds=searches)
        for m in mods:
            getattr(self, f"alpha_{m}").fill_(current[m][0])
            getattr(self, f"beta_{m}").fill_(current[m][1])
        out.update(val_primary_default=first[0], search_evaluations=evaluations)
        return out

    def _search(self, val: dict, m: str) -> tuple[float, float, float]:
        """Without a score: the reference grid on branch m's accuracy; the first best (beta, alpha)
        wins, as in the reference."""
        c = self.config
        betas, alphas = self.grid()
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


def _has_rows(features: dict | None, modalities) -> bool:
    """Whether ``features`` hold every branch's embeddings for at least one clip."""
    return bool(features) and all(("feat_" + m) in features and len(features["feat_" + m]) > 0
                                  for m in modalities)


@register_method("tip-adapter-f")
class TipAdapterF(TipAdapter):
    description = "Tip-Adapter-F: Tip-Adapter with the cache keys fine-tuned (AdamW, 20 epochs)"
    config_class = TipAdapterFConfig
    kind = "fit-then-train"  # fit builds the cache, then the engine fine-tunes the keys
    cost_seconds = (0.52, 0.00011)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)
    learn_keys: ClassVar[bool] = True

    def fit(self, train_features: dict, val_features: dict | None, score: Callable | None = None) -> dict:
        """Build the cache only: the keys are fine-tuned at the configured alpha/beta (the
        reference's init values) and alpha/beta are searched after fine-tuning
        (``after_training``), as the reference does."""
        return super().fit(train_features, None)

    def after_training(self, val_features: dict, score: Callable | None = None) -> dict:
        """The reference's search of alpha/beta on the fine-tuned cache, on validation."""
        return self.select_alpha_beta(val_features, score) if self.config.search else {}
