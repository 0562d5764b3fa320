"""``avprompt bench`` and ``avprompt zeroshot`` (no torch import at module level)."""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import typer

from avprompt.bench import BenchConfig
from avprompt.zeroshot import ZeroShotConfig


def _shown(cls, name: str) -> str:
    """The real default of a config field, for ``--help``: options default to None on the command
    line (None = "not given", so a config file's value is not overridden), the value lives in the
    dataclass."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    v = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(v, (list, tuple)):
        v = ",".join(map(str, v))
    return "none" if v is None else str(v)


def _ints(value: str) -> list[int]:
    """``--shots 1,2,4`` -> [1, 2, 4] (a typed comma list: a bad value is click's one-line usage error)."""
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 1,2,4,8,16") from None


def _strs(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _seeds_or_all(value: str):
    return "none" if value == "all" else _ints(value)


def bench_command(
    shots: Optional[str] = typer.Option(None, "--shots", parser=_ints, metavar="K,...", show_default=_shown(BenchConfig, "shots"), help="comma-separated K, e.g. 1,2,4,8,16"),
    tasks: Optional[str] = typer.Option(None, "--tasks", parser=_strs, metavar="TASK,...", show_default=_shown(BenchConfig, "tasks"), help="ave,ave-cls,llp-cls"),
    methods: Optional[str] = typer.Option(None, "--methods", show_default=_shown(BenchConfig, "methods"), help="all | KEYS | GLOB (comma-separated)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", parser=_ints, metavar="SEED,...", show_default=_shown(BenchConfig, "seeds"), help="comma-separated seeds"),
    seeds_in_network: Optional[str] = typer.Option(None, "--seeds-in-network", parser=_seeds_or_all, metavar="SEED,...|all", show_default=_shown(BenchConfig, "seeds_in_network"),
                                                   help="seeds of DG-SCT, MaPLe (and CoCoOp on SynthAV) "
                                                        "('all' = --seeds)"),
    data: Optional[str] = typer.Option(None, "--data", show_default=_shown(BenchConfig, "data"), help="synthav | DIR | manifest:FILE"),
    backbones: Optional[str] = typer.Option(None, "--backbones", show_default=_shown(BenchConfig, "backbones"), help="synthav | tiny | clip=ARCH@W,clap=ARCH@W"),
    protocol: Optional[Literal["standard", "reference"]] = typer.Option(None, "--protocol", show_default=_shown(BenchConfig, "protocol"), help="splits: standard (shots from train, select on val) or the reference's"),
    modality: Optional[Literal["auto", "v", "a", "av"]] = typer.Option(None, "--modality", show_default=_shown(BenchConfig, "modality"), help="branch: auto (cached-feature methods on every branch they support, in-network ones on their first), v, a or av"),
    out: Optional[str] = typer.Option(None, "--out", show_default=_shown(BenchConfig, "out"), help="results store (runs/ is a working folder; "
                                      "results/ is the committed snapshot)"),
    executor: Optional[Literal["local", "ray"]] = typer.Option(None, "--executor", show_default=_shown(BenchConfig, "executor"), help="where cells run: this machine or a Ray cluster"),
    audio_pass: Optional[Literal["segment", "clip"]] = typer.Option(None, "--audio-pass", show_default=_shown(BenchConfig, "audio_pass"), help="segment (one audio-tower pass per "
                                             "1 s segment, the reference) | clip (one pass per clip, each "
                                             "segment from its own time span; cached-feature methods and DG-SCT, whose guidance is "
                                             "then per span)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", show_default=_shown(BenchConfig, "jobs"), help="cells at once on this machine (local executor; "
                                       "0 = one per CPU core, at most 4, for sweeps over ~2 min; "
                                       "1 on a GPU)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray address (e.g. auto)"),
    device: Optional[str] = typer.Option(None, "--device", show_default=_shown(BenchConfig, "device"), help="auto | cpu | cuda"),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", show_default=_shown(BenchConfig, "max_epochs"), help="cap cached-feature methods' epochs (0: none)"),
    max_epochs_in_network: Optional[int] = typer.Option(None, "--max-epochs-in-network", show_default=_shown(BenchConfig, "max_epochs_in_network"),
                                                        help="cap DG-SCT's / MaPLe's epochs (0: none)"),
    select: Optional[Literal["val", "last"]] = typer.Option(None, "--select", show_default=_shown(BenchConfig, "select"), help="val (the initial state and every "
                                         "epoch compete on validation, ties to the later) | last (the "
                                         "references' last epoch)"),
    config: Optional[str] = typer.Option(None, "--config", help="suite file (TOML/YAML, flat)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="method option METHOD.KEY=VALUE (repeatable), "
                                             "e.g. dg-sct.preset=reference; after the config file's"),
    suite: Optional[str] = typer.Option(None, "--suite", show_default=_shown(BenchConfig, "suite"), help="suite name (result sub-folder)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print each cell as new / done / stale (with the "
                                 "field that differs) / skipped (with why), and exit"),
    rerun: bool = typer.Option(False, "--rerun", help="recompute every cell, even those already done"),
    save_checkpoints: bool = typer.Option(False, "--save-checkpoints", help="keep each computed cell's "
                                          "trained state beside its JSON (seed<S>.ckpt.pt) for `avprompt predict`"),
):
    """Few-shot sweep: every (task, method, shots, seed) cell, one JSON each, then table + curves.

    Example: avprompt bench --tasks ave --methods coop,dg-sct --shots 1,16 --seeds 1,2,3
    """
    from avprompt.bench import run_bench

    cfg = BenchConfig.from_sources(
        config, shots=shots, tasks=tasks, methods=methods, seeds=seeds, seeds_in_network=seeds_in_network,
        data=data, backbones=backbones, protocol=protocol, modality=modality, out=out, executor=executor,
        address=address, jobs=jobs, audio_pass=audio_pass, device=device, max_epochs=max_epochs, max_epochs_in_network=max_epochs_in_network,
        suite=suite, select=select, dry_run=dry_run or None, rerun=rerun or None,
        save_checkpoints=save_checkpoints or None)
    if set_:
        from avprompt.config import parse_method_sets
        merged = {k: dict(v) for k, v in cfg.overrides.items()}
        for method, opts in parse_method_sets(set_).items():
            merged.setdefault(method, {}).update(opts)
        cfg = dataclasses.replace(cfg, overrides=merged)
    outcome = run_bench(cfg, echo=typer.echo)
    if outcome["failed"]:
        raise typer.Exit(1)


def zeroshot_command(
    pretrain: str = typer.Option("vggsound40k", "--pretrain", help="pre-training set (vggsound40k)"),
    targets: Optional[str] = typer.Option(None, "--targets", "--tasks", parser=_strs, metavar="TASK,...", show_default=_shown(ZeroShotConfig, "targets"), help="target tasks, e.g. ave,ave-cls,llp-cls (--tasks is the same option)"),
    methods: Optional[str] = typer.Option(None, "--methods", show_default=_shown(ZeroShotConfig, "methods"), help="all | KEYS | GLOB"),
    seed: Optional[int] = typer.Option(None, "--seed", "--seeds", show_default=_shown(ZeroShotConfig, "seed"),
                                      help="the seed of pre-training and evaluation (one; --seeds is the same option)"),
    data: Optional[str] = typer.Option(None, "--data", show_default=_shown(ZeroShotConfig, "data"), help="synthav | DIR (with vggsound40k/, ave/, llp/)"),
    backbones: Optional[str] = typer.Option(None, "--backbones", show_default=_shown(ZeroShotConfig, "backbones")),
    out: Optional[str] = typer.Option(None, "--out", show_default=_shown(ZeroShotConfig, "out")),
    device: Optional[str] = typer.Option(None, "--device", show_default=_shown(ZeroShotConfig, "device")),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", show_default=_shown(ZeroShotConfig, "max_epochs")),
    from_checkpoint: Optional[str] = typer.Option(None, "--from-checkpoint", help="reuse saved pre-trained checkpoints"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="method option METHOD.KEY=VALUE (repeatable), "
                                             "used in pre-training and at evaluation, e.g. "
                                             "dg-sct.preset=reference-pretrain"),
):
    """Pre-train on VGG-Sound 40K, then evaluate on the targets by class names alone (shots = 0).

    Example: avprompt zeroshot --pretrain vggsound40k --targets ave-cls,llp-cls --methods dg-sct
    """
    from avprompt.config import apply_overrides
    from avprompt.zeroshot import run_zeroshot

    given = {k: v for k, v in dict(pretrain=pretrain, targets=targets, methods=methods, seed=seed,
                                   data=data, backbones=backbones, out=out, device=device,
                                   max_epochs=max_epochs, from_checkpoint=from_checkpoint).items()
             if v is not None}
    if set_:
        from avprompt.config import parse_method_sets
        given["overrides"] = parse_method_sets(set_)
    outcome = run_zeroshot(apply_overrides(ZeroShotConfig(), given, where="command line"), echo=typer.echo)
    if outcome["failed"]:
        raise typer.Exit(1)


def predict_command(
    cell: str = typer.Argument(..., metavar="CELL", help="a cell's seed<S>.json (or seed<S>.ckpt.pt) "
                               "saved by `avprompt bench --save-checkpoints`, or a cell of "
                               "`avprompt train` (ave-sup, avvp)"),
    videos: str = typer.Argument(..., metavar="VIDEO", help="video.mp4, or manifest:FILE (one path per line)"),
    format: Literal["table", "json", "csv"] = typer.Option("table", "--format", help="output format"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
):
    """Label new videos with a trained cell: per-segment labels and probabilities, and the video label.

    Example: avprompt predict runs/fewshot/.../dg-sct@av/synthav/shots16/seed1.json clip.mp4
    """
    import json

    from avprompt.predict import load_cell, predict_videos, read_inputs

    paths = read_inputs(videos)
    method, blob = load_cell(cell, device)
    rows = predict_videos(method, paths, device)
    if format == "json":
        typer.echo(json.dumps({"cell": str(cell), "method": blob["method"], "task": blob["task"]["name"],
                               "videos": rows}, indent=2))
        return
    if format == "csv":
        typer.echo("video,segment,label,prob")
        for r in rows:
            typer.echo(f"{r['video']},video,{r['label']},{r['prob']}")
            for s in r["segments"]:
                typer.echo(f"{r['video']},{s['t']},{s['label']},{s['prob']}")
        return
    for r in rows:
        typer.echo(f"{r['video']}: {r['label']} ({r['prob']:.2f})  [{blob['method']}, {blob['task']['name']}]")
        for s in r["segments"]:
            typer.echo(f"  {s['t']:>2}s  {s['label']:<30} {s['prob']:.2f}")
        for note in r.get("notes") or []:
            typer.echo(f"  note: {note}")
