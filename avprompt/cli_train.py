"""``avprompt train`` and ``avprompt eval``: supervised tasks through task heads (no torch import at
module level)."""
from __future__ import annotations

from typing import Optional

import typer

from avprompt.cli_bench import _ints
from avprompt.tasks import task_names


def train_command(
    task: str = typer.Option("ave-sup", "--task", help="supervised task: " + " | ".join(task_names("supervised"))
                             + " (`avprompt tasks`)"),
    encoder: str = typer.Option("frozen", "--encoder", help="frozen (the towers as they are, no adapter) | dg-sct "
                                "(DG-SCT modules in the towers) | lavish (latent-token adapters)"),
    head: Optional[str] = typer.Option(None, "--head", help="task head key (default: the task's; "
                                       "`avprompt tasks`)"),
    seeds: str = typer.Option("1", "--seeds", parser=_ints, metavar="SEED,...", help="comma-separated seeds, e.g. 1,2,3"),
    data: str = typer.Option("synthav", "--data", help="synthav | DIR (the dataset's standard layout)"),
    backbones: str = typer.Option("synthav", "--backbones", help="synthav | tiny | clip=ARCH@W,clap=ARCH@W"),
    out: str = typer.Option("runs", "--out", help="results store (cells under <out>/supervised/)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="cap the head's epochs"),
    max_epochs_in_network: int = typer.Option(4, "--max-epochs-in-network",
                                              help="cap for dg-sct / lavish (0: none)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE for the head or the encoder "
                                             "mode (repeatable), e.g. lr=5e-4, use_temporal=false"),
    rerun: bool = typer.Option(False, "--rerun", help="recompute cells already done"),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="print every head+encoder of the "
                                 "task in the store with paired intervals"),
):
    """Train a task head on the shared encoder (full training set), select on validation, score test.

    Example: avprompt train --task avvp --encoder dg-sct --seeds 1,2,3 --set use_temporal=false
    """
    from avprompt.config import parse_kv
    from avprompt.supervised.commands import train_supervised
    from avprompt.supervised.compare import comparison, format_comparison
    from avprompt.supervised.run import TrainConfig

    cfg = TrainConfig(task=task, encoder=encoder, head=head or "", seeds=seeds, data=data,
                      backbones=backbones, out=out, device=device, max_epochs=max_epochs,
                      max_epochs_in_network=max_epochs_in_network or None, overrides=parse_kv(set_),
                      rerun=rerun)
    for r in train_supervised(cfg, echo=typer.echo, progress=_progress()):
        typer.echo(f"{'reused' if r['reused'] else 'trained'} {r['path']}: primary {r['primary']:.2f}")
    if compare:
        from pathlib import Path
        typer.echo(format_comparison(comparison(Path(out) / cfg.suite, task), task))


def _progress():
    def show(row):
        val = f" val {row['val']:.1f}" if "val" in row else ""
        typer.echo(f"  epoch {row['epoch']}: loss {row['loss']:.4f}{val}")
    return show


def eval_command(
    checkpoint: str = typer.Option(..., "--checkpoint", help="a cell's seed<S>.ckpt.pt (or a folder "
                                   "holding exactly one)"),
    data: Optional[str] = typer.Option(None, "--data", help="score on other data in the same layout "
                                       "(default: the data it was trained on)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
):
    """Score a trained supervised cell on the test split.

    Example: avprompt eval --checkpoint runs/supervised/.../ave-sup/cmbs+frozen/synthav/full/seed1.ckpt.pt
    """
    from avprompt.supervised.commands import eval_checkpoint
    res = eval_checkpoint(checkpoint, data=data, device=device)
    typer.echo(f"{res['task']} {res['checkpoint']}: {res['primary_metric']} {res['primary']:.2f} "
               f"on {res['n_test']} test videos")
    for k, v in res["metrics"].items():
        typer.echo(f"  {k:<12} {v:6.2f}")
