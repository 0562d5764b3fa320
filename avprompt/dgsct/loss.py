"""DG-SCT's objective (paper app. C.1, eq. 9-11) and its branch weights.

Each branch (image-text, audio-text) has a symmetric CLIP contrastive loss between the samples of
a batch and the class prompts of their labels. Several samples of a batch often share a class
(segments of one clip, background segments), so the loss is the *multi-positive* form:

    image -> text: softmax over the distinct classes present in the batch, target = own class;
    text -> image: for each present class, softmax over the batch's samples, target spread
                   uniformly over the samples of that class.

With all labels distinct this is exactly CLIP's loss (``tests/test_dgsct.py`` checks it).
``negatives="all"`` instead contrasts image -> text against every class of the task.

Branch weights (eq. 11): w1 = y_v / (y_v + y_a), w2 = 1 - w1, where y is a matching score in
[0, 1]: the softmax probability of the branch's best class. The same score is used in training
and at inference (no label is needed), it never makes y_v + y_a vanish (each y >= 1/K), and the
weights are detached: they say how much to trust a branch, they are not a target to optimise.

``reference_loss`` is the released few-shot code's objective instead (``preset="reference"``):
cross-entropy of the fused scores over all classes, weighted 500 in the first 10 epochs and 5
after, plus two audio-visual contrastive terms (x2 audio->image, x1.5 image->audio).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(logits: torch.Tensor, labels: torch.Tensor, negatives: str = "batch") -> torch.Tensor:
    """Per-sample multi-positive symmetric contrastive loss.

    logits: (N, K) scaled similarities of N samples to the K class prompts; labels: (N,) in
    0..K-1. Returns (N,) per-sample terms whose sum is the batch loss
    (1/2) [mean_i CE_i(image->text) + mean_c CE_c(text->image)], so per-sample weights can mix
    branches (eq. 11).
    """
    if negatives not in ("batch", "all"):
        raise ValueError(f"negatives={negatives!r}: use batch|all")
    n = logits.shape[0]
    classes, idx = torch.unique(labels, return_inverse=True)  # idx: (N,) position in classes
    sim = logits[:, classes]  # (N, M) similarity to the present classes
    i2t_logits = logits if negatives == "all" else sim
    i2t_target = labels if negatives == "all" else idx
    i2t = F.cross_entropy(i2t_logits, i2t_target, reduction="none")  # (N,)
    # text -> image: column c, softmax over samples; sample i contributes to its own class column
    log_p = torch.log_softmax(sim, dim=0)  # (N, M)
    t2i = -log_p.gather(1, idx[:, None]).squeeze(1)  # (N,)
    count = torch.bincount(idx, minlength=len(classes)).to(logits.dtype)[idx]  # |P_c| per sample
    return 0.5 * (i2t / n + t2i / (count * len(classes)))


def loss_floor(labels: torch.Tensor) -> torch.Tensor:
    """The smallest value ``contrastive_loss(...).sum()`` can reach for these labels.

    A class shared by |P_c| samples spreads its text->image target over them, so its term is at
    least log |P_c| (reached when the samples tie): overfitting drives the loss to this floor.
    """
    _, idx, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return 0.5 * counts.double().log().mean().float()


def matching_score(logits: torch.Tensor) -> torch.Tensor:
    """y in [1/K, 1]: probability of the best class. logits (..., K) -> (...)."""
    return logits.float().softmax(-1).amax(-1)


def branch_weights(logits_v: torch.Tensor, logits_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w1 = y_v / (y_v + y_a), w2 = 1 - w1 (detached), shaped like the logits without K."""
    y_v, y_a = matching_score(logits_v.detach()), matching_score(logits_a.detach())
    w1 = y_v / (y_v + y_a)
    return w1, 1 - w1


FUSIONS = ("paper", "sum", "per-class")


def fuse(logits_v: torch.Tensor, logits_a: torch.Tensor, fusion: str = "paper") -> torch.Tensor:
    """Class scores of both branches (..., K) -> one (..., K).

    "paper": w1 y_v + w2 y_a with per-sample weights; "sum": the reference few-shot code's
    2 y_v + 2 y_a; "per-class": the pre-training / zero-shot code's w1 = l_v / (l_v + l_a) per
    class on the logits themselves, i.e. (l_v^2 + l_a^2) / (l_v + l_a). That form blows up where
    l_v + l_a ~ 0; a denominator within 1e-4 of 0 is held at +-1e-4 (the code has no guard).
    """
    if fusion == "sum":
        return 2 * logits_v + 2 * logits_a
    if fusion == "per-class":
        den = logits_v + logits_a
        eps = 1e-4
        den = torch.where(den.abs() < eps, torch.where(den < 0, -eps, eps), den)
        w1 = logits_v / den
        return w1 * logits_v + (1 - w1) * logits_a
    if fusion != "paper":
        raise ValueError(f"fusion={fusion!r}: use {'|'.join(FUSIONS)}")
    w1, w2 = branch_weights(logits_v, logits_a)
    return w1[..., None] * logits_v + w2[..., None] * logits_a


def dgsct_loss(logits_v: torch.Tensor, logits_a: torch.Tensor, labels: torch.Tensor,
               fusion: str = "paper", negatives: str = "batch") -> torch.Tensor:
    """L = sum_i w1_i L_v,i + w2_i L_a,i (eq. 11) over N samples: logits (N, K), labels (N,).

    Any other fusion ("sum", "per-class": the reference codes) weighs both branches equally: L_v + L_a.
    """
    l_v = contrastive_loss(logits_v, labels, negatives)
    l_a = contrastive_loss(logits_a, labels, negatives)
    if fusion != "paper":
        return l_v.sum() + l_a.sum()
    w1, w2 = branch_weights(logits_v, logits_a)
    return (w1 * l_v + w2 * l_a).sum()


#: the released few-shot code (main_AVE.py): CE weight by epoch, then the two audio-visual terms
REFERENCE_CE_WEIGHTS = ((10, 500.0), (None, 5.0))  # (last 1-based epoch or None, weight)
REFERENCE_AV_WEIGHTS = (2.0, 1.5)  # audio->image, image->audio


def reference_ce_weight(epoch: int) -> float:
    """The code's CE weight at 0-based ``epoch`` (its epochs count from 1: "epoch <= 10" -> 500)."""
    for last, w in REFERENCE_CE_WEIGHTS:
        if last is None or epoch + 1 <= last:
            return w
    raise AssertionError("unreachable")


def audio_visual_logits(video: torch.Tensor, audio: torch.Tensor, scale: float) -> torch.Tensor:
    """Segment-mean embeddings video (B, T, D), audio (B, T, D) -> audio->image logits (B, B)."""
    v = F.normalize(video.float().mean(1), dim=-1)
    a = F.normalize(audio.float().mean(1), dim=-1)
    return scale * a @ v.T


def reference_loss(event_scores: torch.Tensor, labels: torch.Tensor, av_logits: torch.Tensor,
                   epoch: int) -> torch.Tensor:
    """w(epoch) CE(event_scores, labels) + 2 CE(av, I) + 1.5 CE(av^T, I).

    event_scores (N, K): the fused scores over all classes (segments flattened on AVE); labels (N,);
    av_logits (B, B): ``audio_visual_logits`` of the batch's clips (identity targets).
    """
    ce = F.cross_entropy(event_scores.float(), labels)
    target = torch.arange(av_logits.shape[0], device=av_logits.device)
    w_ai, w_ia = REFERENCE_AV_WEIGHTS
    return (reference_ce_weight(epoch) * ce + w_ai * F.cross_entropy(av_logits, target)
            + w_ia * F.cross_entropy(av_logits.T, target))
