"""Linear probe (Radford et al. 2021; CoOp's ``lpclip/``) on frozen embeddings.

scikit-learn ``LogisticRegression`` (lbfgs, L2, max_iter 1000) on the L2-normalised frozen
embeddings; ``modality=av`` concatenates the normalised CLIP and CLAP embeddings (normalising
first keeps one tower's scale from dominating the other). The inverse regularisation strength C is
chosen on the validation features from a log-spaced grid (1e-3 .. 1e3); the probe trained on the
training features with that C is kept. The coefficients are stored as torch buffers, so the forward
pass is torch and the state dict round-trips.

Selecting C. With the engine's ``score`` (the task's primary metric on validation, higher is
better; ``avprompt.method.Method.fit``), each C's probe is rated by ``score`` of its forward output
on the validation features -- exactly what the evaluator scores: (N, T, K) segment logits with the
background column for segment tasks, the mean over segments for video tasks, absent classes at
-1e4 -- and the best wins. Ties go to the larger C (the less regularised probe), the counterpart of
the training loop's "ties go to the later epoch" (prefer the model fitted further to the shots).
A NaN score counts as the worst. ``fit`` returns ``C`` and ``val_primary``. Without ``score``
(plug-in callers, tests) the old rule stands: primary-label accuracy of the fitted samples, the
first (smallest) best C (``val_accuracy``).

Samples: segment-level tasks fit one sample per labelled segment (background is a class);
video-level tasks fit the mean of each video's normalised segment embeddings. The probe is linear,
so the mean of its segment logits (what video tasks score) equals its logits of that mean.
A class with no training sample gets a constant logit of -1e4 (never predicted).

Kind "fit": the probe *is* trained by optimisation (lbfgs on the cross-entropy, once per C in the
grid), but entirely inside ``fit``; the engine's gradient-descent loop never runs for it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from avprompt.method import Method, MethodConfig
from avprompt.registry import register_method

ABSENT_CLASS_LOGIT = -1e4


@dataclass
class LinearProbeConfig(MethodConfig):
    c_grid: tuple = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)  # searched on validation features
    c: float = 1.0  # used when there are no validation features
    max_iter: int = 1000
    epochs: int = 0


@register_method("linear-probe")
class LinearProbe(Method):
    description = "Linear probe: logistic regression (lbfgs, L2, C on validation) on frozen embeddings"
    config_class = LinearProbeConfig
    supported_modalities = ("v", "a", "av")
    # fit() trains the probe with scikit-learn's lbfgs (an inner solver, several C values): that is
    # real optimisation, but the engine runs no epochs of its own, so the kind is "fit".
    kind = "fit"
    runs_on = "features"
    cost_seconds = (0.07, 0.0008)  # embedded towers, 1 thread (benchmarks/sweep_profile.py --fit)

    def __init__(self, encoders, task, config: LinearProbeConfig):
        super().__init__(encoders, task, config)
        dim = sum(encoders.tower(m).embed_dim for m in self.modalities)
        self.register_buffer("coef", torch.zeros(task.num_outputs, dim))  # (K, D_total)
        self.register_buffer("intercept", torch.zeros(task.num_outputs))  # (K,)

    def embed(self, feats: dict) -> torch.Tensor:
        """Normalised (and, for av, concatenated) embeddings (..., D_total) from feat_v/feat_a."""
        return torch.cat([F.normalize(feats[m].float(), dim=-1) for m in self.modalities], dim=-1)

    def segment_logits(self, batch):
        x = self.embed({m: self.features(batch, m) for m in self.modalities})  # (B, T, D_total)
        return x @ self.coef.T + self.intercept

    # ----- fitting ---------------------------------------------------------------------------
    def samples(self, features: dict) -> tuple[np.ndarray, np.ndarray]:
        """(N, D_total) float64 samples and (N,) labels for scikit-learn."""
        for m in self.modalities:
            if "feat_" + m not in features:
                raise ValueError(f"{self.key}: fit features lack 'feat_{m}' (modality={self.config.modality})")
        x = self.embed({m: features["feat_" + m] for m in self.modalities})  # (N, T, D)
        if self.task.level == "segment":
            if "segment_labels" not in features:
                raise ValueError(f"{self.key}: fit features lack 'segment_labels'")
            x, y = x.flatten(0, 1), features["segment_labels"].flatten().long().to(x.device)
            keep = (y >= 0) & (y < self.task.num_outputs)
            x, y = x[keep], y[keep]
        else:
            if "label" not in features:
                raise ValueError(f"{self.key}: fit features lack 'label'")
            x, y = x.mean(dim=1), features["label"].long()
        return x.detach().cpu().double().numpy(), y.cpu().numpy()

    def _train(self, x: np.ndarray, y: np.ndarray, c: float):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=c, solver="lbfgs", max_iter=self.config.max_iter, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(x, y)
        return lr

    def _set(self, lr) -> None:
        """Copy a fitted scikit-learn model into the (K, D) / (K,) buffers."""
        coef = torch.zeros_like(self.coef)
        bias = torch.full_like(self.intercept, ABSENT_CLASS_LOGIT)
        classes = torch.as_tensor(lr.classes_, dtype=torch.long)
        w = torch.as_tensor(lr.coef_, dtype=coef.dtype)
        b = torch.as_tensor(lr.intercept_, dtype=coef.dtype)
        if len(classes) == 2:  # binary: one score s = w x + b; softmax over (0, s) gives sigmoid(s)
            coef[classes[1]], bias[classes[1]] = w[0], b[0]
            bias[classes[0]] = 0.0
        else:
            coef[classes], bias[classes] = w, b
        self.coef.copy_(coef)
        self.intercept.copy_(bias)

    @torch.no_grad()
    def fit(self, train_features: dict, val_features: dict | None, score: Callable | None = None) -> dict:
        """Fit on ``train_features``; choose C on ``val_features``.

        With ``score``: by ``score`` of the probe's forward output on the validation features, ties
        to the larger C; returns ``{"C", "val_primary", "train_samples"}``. Without: by validation
        accuracy, first (smallest) best C; returns ``{"C", "val_accuracy", "train_samples"}``.
        """
        x, y = self.samples(train_features)
        present = np.unique(y)
        if len(present) == 0:
            raise ValueError(f"{self.key}: the training features hold no labelled sample")
        have_val = bool(val_features) and all("feat_" + m in val_features for m in self.modalities)
        scored = score is not None and have_val and len(val_features["feat_" + self.modalities[0]]) > 0
        if len(present) == 1:  # scikit-learn needs two classes: predict the only one seen
            self.coef.zero_()
            self.intercept.fill_(ABSENT_CLASS_LOGIT)
            self.intercept[int(present[0])] = 0.0
            out = {"C": None, "train_samples": int(len(y)), "note": "one class in the training features"}
            if scored:
                out["val_primary"] = float(score(self._val_output(val_features)))
            return out
        grid = [float(c) for c in self.config.c_grid]
        out = {"train_samples": int(len(y))}
        if scored:
            best = None  # (rank key, score, C, model)
            for c in grid:
                lr = self._train(x, y, c)
                self._set(lr)
                s = float(score(self._val_output(val_features)))
                key = -math.inf if math.isnan(s) else s
                if best is None or key > best[0] or (key == best[0] and c > best[2]):
                    best = (key, s, c, lr)
            out.update(C=best[2], val_primary=best[1])
            self._set(best[3])
        elif have_val:
            xv, yv = self.samples(val_features)
            best = None
            for c in grid:
                lr = self._train(x, y, c)
                acc = float((lr.predict(xv) == yv).mean()) if len(yv) else 0.0
                if best is None or acc > best[0]:
                    best = (acc, c, lr)
            out.update(C=best[1], val_accuracy=best[0])
            self._set(best[2])
        else:
            out.update(C=float(self.config.c))
            self._set(self._train(x, y, float(self.config.c)))
        return out

    def _val_output(self, features: dict):
        """``forward`` on the validation features, as a CPU float32 array (what ``score`` reads)."""
        batch = {"feat_" + m: features["feat_" + m].to(self.coef.device) for m in self.modalities}
        return self(batch).float().cpu().numpy()
