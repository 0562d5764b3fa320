"""Per-block access to the frozen towers, without forking open_clip or laion-clap.

Every transformer block of every tower is wrapped in a ``BlockRunner`` that can run its attention
half and its MLP half separately, so methods can act between them (DG-SCT's eq. 1-2 inject after
attention and after the MLP; MaPLe replaces prompt tokens before a block). The halves call the
library's own sub-modules in the library's own order; ``tests/test_encoders.py`` checks that
``attn`` followed by ``mlp`` (and ``after``) reproduces the block's stock ``forward`` exactly.

All runners take and return batch-first tokens ``(N, L, C)``.
"""
from __future__ import annotations

import torch
from torch import nn


class BlockRunner:
    """One block of a frozen tower: ``x = after(mlp(attn(x)))`` equals the stock block."""

    def __init__(self, block: nn.Module, width: int, grid: tuple[int, int] | None):
        self.block = block
        self.width = width  # C of the tokens this block reads
        self.grid = grid  # (H, W) token grid for spatial blocks, None for sequences

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after(self, x: torch.Tensor) -> torch.Tensor:
        """Stage transition after the block (Swin patch merging); identity elsewhere."""
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.mlp(self.attn(x)))

    def pooled(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The block's output at one token per row: x (N, L, C), pos (N,) -> (N, 1, C).

        Equals ``self(x)[arange(N), pos]``; blocks whose tokens attend independently of each other's
        outputs compute it for that token alone (``ClipBlockRunner``)."""
        return self(x)[torch.arange(x.shape[0], device=x.device), pos].unsqueeze(1)


class ClipBlockRunner(BlockRunner):
    """open_clip ``ResidualAttentionBlock`` (batch-first, layer scale ``ls_1``/``ls_2``)."""

    def __init__(self, block, width, grid=None, mask_owner: nn.Module | None = None):
        super().__init__(block, width, grid)
        self.mask_owner = mask_owner  # the model whose ``attn_mask`` buffer is the causal mask

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """The owner's mask as it is now: ``.to(device)`` replaces a module's buffers, so a
        reference kept from construction would stay on the CPU."""
        return None if self.mask_owner is None else self.mask_owner.attn_mask

    def attn(self, x):
        b = self.block
        mask = self.attn_mask
        if mask is not None:
            mask = mask[: x.shape[1], : x.shape[1]]
        return x + b.ls_1(b.attention(q_x=b.ln_1(x), attn_mask=mask))

    def mlp(self, x):
        b = self.block
        return x + b.ls_2(b.mlp(b.ln_2(x)))

    def _attend(self, q, kv, mask):
        """Multi-head attention of queries q (N, Q, C) over kv (N, L, C), both normalised."""
        return self.block.attention(q_x=q, k_x=kv, v_x=kv, attn_mask=mask)

    def pooled(self, x, pos):
        """Only the token at ``pos`` is computed: its query attends over every token's key and value
        (under the causal mask's row for it), then its MLP. A pooled tower's last block (the text EOT,
        the ViT's class token) costs ~1/L of its MLP and output projection this way (an embedded
        text tower's last block is a third of its work). Equal to the full block up to rounding
        (``tests/test_encoders.py``)."""
        n, L, _ = x.shape
        rows = torch.arange(n, device=x.device)
        h = self.block.ln_1(x)
        mask = None
        if self.attn_mask is not None:
            m = self.attn_mask[:L, :L][pos]  # (N, L): each row's own mask row
            heads = self.block.attn.num_heads
            mask = m.repeat_interleave(heads, 0).unsqueeze(1)  # (N * heads, 1, L)
        b = self.block
        ls_1, ls_2 = getattr(b, "ls_1", nn.Identity()), getattr(b, "ls_2", nn.Identity())  # laion-clap: none
        y = x[rows, pos].unsqueeze(1) + ls_1(self._attend(h[rows, pos].unsqueeze(1), h, mask))
        return y + ls_2(b.mlp(b.ln_2(y)))


class SeqFirstBlockRunner(ClipBlockRunner):
    """laion-clap text ``ResidualAttentionBlock``: sequence-first attention, no layer scale."""

    def attn(self, x):
        b = self.block
        mask = self.attn_mask[: x.shape[1], : x.shape[1]] if self.attn_mask is not None else None
        h = b.ln_1(x).transpose(0, 1)  # (L, N, C): nn.MultiheadAttention without batch_first
        return x + b.attention(h, attn_mask=mask).transpose(0, 1)

    def mlp(self, x):
        b = self.block
        return x + b.mlp(b.ln_2(x))

    def _attend(self, q, kv, mask):
        kv = kv.transpose(0, 1)
        return self.block.attn(q.transpose(0, 1), kv, kv, need_weights=False, attn_mask=mask)[0].transpose(0, 1)


class SwinBlockRunner(BlockRunner):
    """laion-clap HTS-AT ``SwinTransformerBlock``: (shifted) window attention on an (H, W) grid.

    ``downsample`` is the stage's ``PatchMerging`` when this is the stage's last block.
    """

    def __init__(self, block, width, grid, downsample: nn.Module | None):
        super().__init__(block, width, grid)
        self.downsample = downsample

    def attn(self, x):
        from laion_clap.clap_module.htsat import window_partition, window_reverse

        b = self.block
        H, W = b.input_resolution
        N, L, C = x.shape
        h = b.norm1(x).view(N, H, W, C)
        if b.shift_size > 0:  # cyclic shift, undone below
            h = torch.roll(h, shifts=(-b.shift_size, -b.shift_size), dims=(1, 2))
        windows = window_partition(h, b.window_size).view(-1, b.window_size * b.window_size, C)
        out, _ = b.attn(windows, mask=b.attn_mask)
        h = window_reverse(out.view(-1, b.window_size, b.window_size, C), b.window_size, H, W)
        if b.shift_size > 0:
            h = torch.roll(h, shifts=(b.shift_size, b.shift_size), dims=(1, 2))
        return x + b.drop_path(h.reshape(N, H * W, C))

    def mlp(self, x):
        b = self.block
        return x + b.drop_path(b.mlp(b.norm2(x)))

    def after(self, x):
        return self.downsample(x) if self.downsample is not None else x
