"""A text tower interface shared by CLIP's and CLAP's CLIP-style text transformers.

Prompt-learning methods (CoOp, CoCoOp, MaPLe, DG-SCT's learnable context) build token embeddings
themselves and call ``encode_embeds``; fixed prompts go through ``encode``. The EOT position is
``ids.argmax(-1)`` in both libraries (the EOT token has the highest id in the BPE vocabulary).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from avprompt.encoders.blocks import BlockRunner
from avprompt.encoders.hooks import TowerHook, acts_before_blocks_only, run_blocks, run_blocks_pooled


class TextTower:
    """Frozen CLIP-style text transformer.

    token_embedding: nn.Embedding (V, W); positional: (L, W); blocks: batch-first runners;
    ln_final: LayerNorm(W); projection: (W, D) parameter or a module mapping W -> D.
    """

    supports_prompt_learning = True

    def __init__(self, tokenizer, token_embedding: nn.Embedding, positional: torch.Tensor,
                 blocks: Sequence[BlockRunner], ln_final: nn.Module, projection, embed_dim: int):
        self.tokenizer = tokenizer
        self.token_embedding = token_embedding
        self.positional = positional
        self.blocks = list(blocks)
        self.ln_final = ln_final
        self.projection = projection
        self.embed_dim = embed_dim

    @property
    def causal(self) -> bool:
        """Every block masks attention to later positions (CLIP's and CLAP's text transformers)."""
        if not hasattr(self, "_causal"):
            def is_causal(m):
                if m is None or m.dim() != 2:
                    return False
                later = torch.ones_like(m, dtype=torch.bool).triu(1)
                blocked = (m == float("-inf")) if m.is_floating_point() else m.bool()
                return bool(torch.equal(blocked, later))
            self._causal = all(is_causal(getattr(b, "attn_mask", None)) for b in self.blocks)
        return self._causal

    @property
    def width(self) -> int:
        return self.token_embedding.embedding_dim

    @property
    def context_length(self) -> int:
        return self.positional.shape[0]

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, L) long token ids: [SOS] words [EOT] padding, truncated to the context length."""
        return self.tokenizer(list(texts), context_length=self.context_length).to(self.device)

    def token_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, L) ids -> (n, L, W) token embeddings (no positional embedding yet)."""
        return self.token_embedding(ids)

    def encode_embeds(self, x: torch.Tensor, ids: torch.Tensor,
                      hook: TowerHook | None = None) -> torch.Tensor:
        """Token embeddings (n, L, W) + the ids that give the EOT position -> (n, D) features.

        Only the EOT token is read, so unless ``hook`` acts inside blocks: under a causal mask the
        positions after the last EOT (padding, which no EOT can attend to) are not computed, and
        the last block computes the EOT token alone (``run_blocks_pooled``). A prompt of 11 of 16
        tokens thus costs 11/16 of the blocks, and of CLIP's 77 tokens a 10-token prompt 10/77."""
        eot = ids.argmax(dim=-1)
        shortcut = acts_before_blocks_only(hook)
        if shortcut and self.causal:
            x = x[:, : int(eot.max()) + 1]
        x = x + self.positional[: x.shape[1]].to(x.dtype)
        if shortcut:
            pooled = self.ln_final(run_blocks_pooled(self.blocks, x, eot, hook))[:, 0]
        else:
            x = self.ln_final(run_blocks(self.blocks, x, hook))
            pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(self.projection, nn.Module):
            return self.projection(pooled)
        return pooled @ self.projection

    def encode(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Texts (or ids (n, L)) -> (n, D) unnormalised text features."""
        ids = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        return self.encode_embeds(self.token_embeds(ids), ids)


class HFTextTower:
    """laion-clap's RoBERTa text branch (official checkpoints): fixed prompts only.

    Prompt learning needs a CLIP-style tower; methods check ``supports_prompt_learning``.
    """

    supports_prompt_learning = False

    def __init__(self, clap_model, tokenizer, embed_dim: int):
        self.model = clap_model
        self.tokenizer = tokenizer
        self.embed_dim = embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=77,
                             return_tensors="pt")
        return self.model.encode_text({k: v for k, v in tok.items()}, device=self.device)
