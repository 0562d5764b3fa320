"""The one hook mechanism through which methods act inside the frozen towers.

A *tower hook* is ``hook(i, point, x) -> x`` called at block ``i`` with ``point`` in
``{"pre", "attn", "mlp"}``: before the block, after its attention half, after its MLP half
(before any stage transition). MaPLe uses "pre" to place deep prompts; adapters may use the others.

A *pair hook* is ``hook(k, point, x_v, x_a) -> (x_v, x_a)`` called at paired layer ``k`` of two
towers stepped in lockstep (DG-SCT's cross-modal modules). ``run_paired``'s ``mode`` says where:

    "split"         "attn" after both attention halves, "mlp" after both MLP halves (paper eq. 1-2)
    "vision-split"  "attn" after the vision attention half and the *whole* audio block, then
                    "mlp" after the vision MLP half (audio unchanged in between): DG-SCT's released
                    code, whose Swin audio blocks run whole
    "block"         "block" once after both whole blocks
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from avprompt.encoders.blocks import BlockRunner

TowerHook = Callable[[int, str, torch.Tensor], torch.Tensor]
PairHook = Callable[[int, str, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def run_block(blk: BlockRunner, i: int, x: torch.Tensor, hook: TowerHook | None) -> torch.Tensor:
    if hook is None:
        return blk(x)
    x = hook(i, "pre", x)
    x = hook(i, "attn", blk.attn(x))
    x = hook(i, "mlp", blk.mlp(x))
    return blk.after(x)


def run_blocks(blocks: Sequence[BlockRunner], x: torch.Tensor, hook: TowerHook | None = None,
               start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Run ``blocks[start:stop]`` on tokens ``x`` (N, L, C), calling ``hook`` at each point."""
    stop = len(blocks) if stop is None else stop
    for i in range(start, stop):
        x = run_block(blocks[i], i, x, hook)
    return x


def pre_only(hook: TowerHook) -> TowerHook:
    """Mark a tower hook that acts only at "pre" (returns x unchanged at "attn" and "mlp"): a
    pooled tower may then compute its last block for the pooled token alone (``run_blocks_pooled``),
    and a causal text tower may leave out the positions after the last EOT (the hook must take
    any sequence length and keep token positions)."""
    hook.pre_only = True
    return hook


def acts_before_blocks_only(hook: TowerHook | None) -> bool:
    """No hook, or one marked ``pre_only``: the towers' shortcuts for pooled outputs apply."""
    return hook is None or getattr(hook, "pre_only", False)


def run_blocks_pooled(blocks: Sequence[BlockRunner], x: torch.Tensor, pos: torch.Tensor,
                      hook: TowerHook | None = None) -> torch.Tensor:
    """``run_blocks(blocks, x, hook)[arange(N), pos]`` as (N, 1, C), the last block computed for the
    token at ``pos`` alone (``BlockRunner.pooled``). For towers whose output is one pooled token
    (text EOT, ViT class token). A hook must be ``pre_only``: "attn"/"mlp" would see one token."""
    if not acts_before_blocks_only(hook):
        raise ValueError("run_blocks_pooled: the hook acts inside blocks; use run_blocks")
    x = run_blocks(blocks, x, hook, stop=len(blocks) - 1)
    last = len(blocks) - 1
    if hook is not None:
        x = hook(last, "pre", x)
    return blocks[last].pooled(x, pos)


def pair_blocks(n_v: int, n_a: int) -> list[tuple[int, int]]:
    """Pairing rule for towers of different depths: one pair per block of the shallower tower.

    Block ``s`` of the shallower tower (depth n_s) pairs with block ``ceil((s+1) * n_l / n_s) - 1``
    of the deeper one (depth n_l): the last block of its proportional share, so the pair's tokens
    are equally far through both towers. Equal depths pair k with k (DG-SCT's reference: ViT-B/32
    with a 12-block HTS-AT). ViT-B (12) with HTSAT-base (18): vision s pairs audio
    1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17. The deeper tower's other blocks run unchanged.
    """
    if n_v <= 0 or n_a <= 0:
        raise ValueError(f"both towers need blocks to pair, got {n_v} and {n_a}")
    short, long_ = min(n_v, n_a), max(n_v, n_a)
    other = [-(-(s + 1) * long_ // short) - 1 for s in range(short)]
    return [(s, o) if n_v <= n_a else (o, s) for s, o in zip(range(short), other)]


PAIR_MODES = ("split", "vision-split", "block")


def run_paired(v_blocks: Sequence[BlockRunner], x_v: torch.Tensor,
               a_blocks: Sequence[BlockRunner], x_a: torch.Tensor, hook: PairHook,
               pairs: list[tuple[int, int]] | None = None, mode: str = "split"):
    """Step two towers in lockstep; at each pair (i, j) call ``hook`` between them.

    x_v: (N, L_v, C_v) vision tokens; x_a: (N, L_a, C_a) audio tokens; the same N rows (one per
    segment) in both. Unpaired blocks of the deeper tower run unchanged before their pair's block.
    Returns the final tokens of both towers.
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"run_paired: mode={mode!r}; use one of {'|'.join(PAIR_MODES)}")
    pairs = pair_blocks(len(v_blocks), len(a_blocks)) if pairs is None else pairs
    next_v = next_a = 0
    for k, (i, j) in enumerate(pairs):
        x_v = run_blocks(v_blocks, x_v, start=next_v, stop=i)
        x_a = run_blocks(a_blocks, x_a, start=next_a, stop=j)
        bv, ba = v_blocks[i], a_blocks[j]
        if mode == "split":
            x_v, x_a = hook(k, "attn", bv.attn(x_v), ba.attn(x_a))
            x_v, x_a = hook(k, "mlp", bv.mlp(x_v), ba.mlp(x_a))
        elif mode == "vision-split":
            x_v, x_a = hook(k, "attn", bv.attn(x_v), ba.mlp(ba.attn(x_a)))
            x_v, x_a = hook(k, "mlp", bv.mlp(x_v), x_a)
        else:
            x_v, x_a = hook(k, "block", bv.mlp(bv.attn(x_v)), ba.mlp(ba.attn(x_a)))
        x_v, x_a = bv.after(x_v), ba.after(x_a)
        next_v, next_a = i + 1, j + 1
    x_v = run_blocks(v_blocks, x_v, start=next_v)
    x_a = run_blocks(a_blocks, x_a, start=next_a)
    return x_v, x_a
