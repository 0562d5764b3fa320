"""Learnable text prompts shared by CoOp, CoCoOp and MaPLe (one piece of prompt construction).

Zhou et al. 2022 (CoOp, CoCoOp), Khattak et al. 2023 (MaPLe). A ``PromptLearner`` owns the
learnable context vectors of one CLIP-style text tower (CLIP's or CLAP's) and builds, for every
class name, the token-embedding sequence

    [SOS] [ctx_1 .. ctx_M] [class tokens] [.] [EOT] [pad ...]      (class_position="end")
    [SOS] [ctx_1 .. ctx_M/2] [class tokens] [ctx_M/2+1 .. ctx_M] [.] [EOT] ...   ("middle")
    [SOS] [class tokens] [ctx_1 .. ctx_M] [.] [EOT] ...            ("front")

from the frozen tower's embeddings of the tokenised template ``"X X ... X {name}."``. Every
arrangement has the same length, so the EOT lands at ``1 + M + len(name) + 1`` for all three and
``ids.argmax(-1)`` (the text tower's EOT pooling) stays valid.

Construction is one einsum: ``prompt[k] = frozen[k] + place[k] @ ctx`` where ``frozen`` (K, L, W)
holds SOS/class/period/EOT embeddings with zeros in the context slots and ``place`` (K, L, M) is the
one-hot placement of context token j at its slot for class k. The same code serves a unified
context (M, W), a class-specific one (K, M, W) and per-sample conditioned contexts (CoCoOp).

Sequences are cut right after the last EOT: the text transformers are causal, so positions after
the EOT never reach the pooled EOT feature (same numbers, less compute).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from avprompt.method import MethodConfig

CLASS_POSITIONS = ("end", "middle", "front")


def harmonic_mean(base: float, new: float) -> float:
    """Base-to-new harmonic mean HM = 2BN / (B + N) (0 when both are 0)."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


@dataclass
class PromptConfig(MethodConfig):
    """Fields shared by the prompt-learning baselines (each overrides the reference defaults)."""

    n_ctx: int = 16
    ctx_init: str = ""  # CLIP-branch init words (first n_ctx tokens); "" = N(0, 0.02)
    ctx_init_audio: str = ""  # CLAP-branch init words; "" = N(0, 0.02)
    csc: bool = False  # class-specific context (K, n_ctx, W) instead of one shared (n_ctx, W)
    class_position: str = "end"  # end | middle | front
    fit_ctx: bool = True  # shrink n_ctx (with a warning) when a prompt exceeds the text context
    # "shots:epochs" pairs; shots up to each key use its epochs (larger shots use the last entry);
    # "" = always ``epochs``.
    epochs_by_shots: str = ""

    def epochs_for(self, shots: int) -> int:
        """Reference epoch count for a few-shot run with ``shots`` examples per class."""
        if not self.epochs_by_shots.strip():
            return self.epochs
        table = []
        for item in self.epochs_by_shots.split(","):
            try:
                k, e = item.split(":")
                table.append((int(k), int(e)))
            except ValueError:
                raise ValueError(f"option epochs_by_shots={self.epochs_by_shots!r}: expected "
                                 f"'shots:epochs' pairs like '1:50,4:100,16:200'") from None
        table.sort()
        for k, e in table:
            if shots <= k:
                return e
        return table[-1][1]

    def init_words(self, modality: str) -> str:
        return self.ctx_init if modality == "v" else self.ctx_init_audio


def check_prompt_tower(text, method: str, modality: str):
    """Raise a clear ValueError when a text tower cannot take learned token embeddings."""
    if not getattr(text, "supports_prompt_learning", False):
        branch = "CLIP" if modality == "v" else "CLAP"
        raise ValueError(f"method {method!r}: the {branch} text tower ({type(text).__name__}) does not "
                         f"support prompt learning (it needs a CLIP-style transformer text tower); "
                         f"use a transformer text branch or another modality")
    return text


class PromptLearner(nn.Module):
    """Learnable context for one text tower and ``K`` class names.

    Buffers (frozen, not saved): ``frozen`` (K, L, W), ``place`` (K, L, M), ``ids`` (K, L) with
    ``L`` the sequence length up to the last EOT. Parameter: ``ctx`` (M, W) or (K, M, W) for CSC.
    """

    def __init__(self, text, names: list[str], n_ctx: int, init_words: str = "", csc: bool = False,
                 class_position: str = "end", fit_ctx: bool = True, where: str = "prompt learner"):
        super().__init__()
        if class_position not in CLASS_POSITIONS:
            raise ValueError(f"{where}: class_position={class_position!r}; use one of {'|'.join(CLASS_POSITIONS)}")
        if n_ctx < 1:
            raise ValueError(f"{where}: n_ctx={n_ctx} must be at least 1")
        self.text = text  # plain attribute: the frozen tower belongs to the Encoders module
        self.csc, self.class_position = csc, class_position
        name_ids = text.tokenize(names)
        name_lens = (name_ids.argmax(-1) - 1).tolist()  # tokens between SOS and EOT
        room = text.context_length - max(name_lens) - 3  # SOS, ".", EOT
        #: why n_ctx was shrunk ("" when it was not); build_learners records it on the method
        self.requested_n_ctx, self.shrink_reason = n_ctx, ""
        if n_ctx > room:
            msg = (f"{where}: n_ctx={n_ctx} does not fit the text context length {text.context_length} "
                   f"next to the longest class name ({max(name_lens)} tokens)")
            if not fit_ctx or room < 1:
                raise ValueError(msg + "; lower n_ctx or shorten the class names")
            warnings.warn(msg + f"; using n_ctx={room}", stacklevel=2)
            self.shrink_reason = (f"prompt + longest class name ({max(name_lens)} tokens) exceed the "
                                  f"text tower's {text.context_length}-token context")
            n_ctx = room
        self.n_ctx = n_ctx
        ids = text.tokenize([" ".join(["X"] * n_ctx) + " " + name + "." for name in names])  # (K, L)
        length = int(ids.argmax(-1).max()) + 1
        ids = ids[:, :length]
        with torch.no_grad():
            emb = text.token_embeds(ids).float()  # (K, L, W): [SOS][X..X][name][.][EOT]
        k, _, w = emb.shape
        frozen = torch.zeros_like(emb)
        place = torch.zeros(k, length, n_ctx, device=emb.device)
        half = n_ctx // 2
        for c, n in enumerate(name_lens):
            sos, name, rest = emb[c, :1], emb[c, 1 + n_ctx:1 + n_ctx + n], emb[c, 1 + n_ctx + n:]
            if class_position == "end":
                slots, name_at = list(range(1, 1 + n_ctx)), 1 + n_ctx
            elif class_position == "front":
                slots, name_at = list(range(1 + n, 1 + n + n_ctx)), 1
            else:
                slots = list(range(1, 1 + half)) + list(range(1 + half + n, 1 + n + n_ctx))
                name_at = 1 + half
            frozen[c, :1] = sos
            frozen[c, name_at:name_at + n] = name
            frozen[c, 1 + n_ctx + n:] = rest  # ".", EOT, padding: same place in every arrangement
            place[c, slots, torch.arange(n_ctx)] = 1.0
        self.register_buffer("frozen", frozen, persistent=False)
        self.register_buffer("place", place, persistent=False)
        self.register_buffer("ids", ids, persistent=False)
        self.name_lens = name_lens
        ctx = torch.empty(k, n_ctx, w) if csc else torch.empty(n_ctx, w)
        nn.init.normal_(ctx, std=0.02)
        if init_words:
            with torch.no_grad():
                wid = text.tokenize([init_words])
                vec = text.token_embeds(wid)[0, 1:int(wid.argmax(-1))].float()[:n_ctx]  # words only
            ctx[..., : vec.shape[0], :] = vec.to(ctx.device)
        self.ctx = nn.Parameter(ctx)

    @property
    def num_classes(self) -> int:
        return self.frozen.shape[0]

    def ctx_slots(self) -> torch.Tensor:
        """(K, M) long: sequence position of context token j in class k's prompt."""
        return self.place.argmax(1)

    def build(self, shift: torch.Tensor | None = None, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt token embeddings.

        shift: optional (N, W) per-sample offset added to every context token (CoCoOp).
        ctx: optional replacement context (M, W) / (K, M, W) (defaults to the learned one).
        Returns (K, L, W), or (N, K, L, W) with ``shift``.
        """
        ctx = self.ctx if ctx is None else ctx
        dtype = self.frozen.dtype
        if shift is None:
            eq = "klj,kjw->klw" if ctx.dim() == 3 else "klj,jw->klw"
            return self.frozen + torch.einsum(eq, self.place, ctx.to(dtype))
        if ctx.dim() == 3:  # (N, K, M, W): class-specific context, per-sample offset
            cond = ctx.unsqueeze(0) + shift[:, None, None, :]
            return self.frozen + torch.einsum("klj,nkjw->nklw", self.place, cond.to(dtype))
        cond = ctx.unsqueeze(0) + shift[:, None, :]  # (N, M, W)
        return self.frozen + torch.einsum("klj,njw->nklw", self.place, cond.to(dtype))

    def encode(self, prompts: torch.Tensor, hook=None) -> torch.Tensor:
        """(..., K, L, W) prompt embeddings -> (..., K, D) unnormalised text features."""
        lead = prompts.shape[:-3]
        flat = prompts.reshape(-1, *prompts.shape[-2:])
        ids = self.ids.repeat(flat.shape[0] // self.num_classes, 1)
        return self.text.encode_embeds(flat, ids, hook).view(*lead, self.num_classes, -1)

    def forward(self, hook=None) -> torch.Tensor:
        """(K, D) unnormalised class text features from the current context.

        Without gradients (evaluation) the features are kept until the context changes (its
        tensor version moves with every optimiser step or load), so an evaluation pass runs
        the text tower once, not once per batch."""
        if hook is not None or torch.is_grad_enabled():
            return self.encode(self.build(), hook)
        key = (self.ctx.data_ptr(), self.ctx._version, self.ctx.device)
        memo = self.__dict__.get("_eval_features")
        if memo is None or memo[0] != key:
            memo = self.__dict__["_eval_features"] = (key, self.encode(self.build()))
        return memo[1]


def build_learners(method, n_ctx: int, fit_ctx: bool = True, **kw) -> nn.ModuleDict:
    """One ``PromptLearner`` per modality of ``method`` (its ``config.modality``), keyed "v"/"a".

    Reads ctx_init / ctx_init_audio, csc and class_position from ``method.config`` unless given.
    A shrunk n_ctx is recorded on the method (``record_change``), so results show what ran.
    """
    cfg = method.config
    learners = nn.ModuleDict()
    for m in method.modalities:
        text = check_prompt_tower(method.encoders.tower(m).text, method.key, m)
        pl = PromptLearner(
            text, method.task.prompt_names, n_ctx, init_words=kw.get("init_words", cfg.init_words(m)),
            csc=kw.get("csc", cfg.csc), class_position=kw.get("class_position", cfg.class_position),
            fit_ctx=fit_ctx, where=f"method {method.key} ({m})")
        if pl.shrink_reason:
            method.record_change("n_ctx", n_ctx, pl.n_ctx, pl.shrink_reason, branch=m)
        learners[m] = pl
    return learners
