"""``avprompt data ...`` commands: prepare the media cache, dataset statistics, manifests.

Thin over ``avprompt.data``; imports nothing heavy at module level (no torch), so
``avprompt --help`` stays fast. Bad input ends with one ``error: ...`` line and exit code 2.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Optional

import typer

app = typer.Typer(help="Datasets: prepare media caches, statistics, manifests.",
                  no_args_is_help=True)

DATASET_HELP = "ave | llp | vggsound | vggsound40k | manifest:FILE"
#: ``data stats`` also reads AVSBench-object (S4, MS3) and MUSIC-AVQA (not clip datasets)
STATS_DATASET_HELP = DATASET_HELP + " | avs-s4 | avs-ms3 | musicavqa"


def default_cache_dir() -> Path:
    """``$AVPROMPT_CACHE/media`` or ``~/.cache/avprompt/media``."""
    base = os.environ.get("AVPROMPT_CACHE") or Path.home() / ".cache" / "avprompt"
    return Path(base) / "media"


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


@app.command()
def prepare(
    dataset: str = typer.Option(..., help=DATASET_HELP),
    root: Optional[Path] = typer.Option(None, help="dataset folder (annotations + media)"),
    workers: int = typer.Option(max(1, min(4, os.cpu_count() or 1)), help="decoding processes"),
    cache: Optional[Path] = typer.Option(None, help="cache folder [default: "
                                         "$AVPROMPT_CACHE/media or ~/.cache/avprompt/media]"),
    image_size: int = typer.Option(224, help="frame size (match the image encoder)"),
    sample_rate: int = typer.Option(48000, help="audio sample rate (match the audio encoder)"),
    on_bad_media: Literal["fail", "skip"] = typer.Option("fail", help="fail | skip (list bad files in report.json)"),
) -> None:
    """Decode every clip once into the on-disk cache (resumable).

    Example: avprompt data prepare --dataset ave --root /data/AVE --workers 4
    """
    from avprompt.data.datasets import load_dataset
    from avprompt.data.prepare import prepare as run_prepare

    try:
        index = load_dataset(dataset, root)
        report = run_prepare(index, cache or default_cache_dir(), image_size, sample_rate,
                             workers, on_bad_media)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(f"{report.total} media files: {report.decoded} decoded, {report.reused} reused, "
               f"{len(report.bad)} bad, {len(report.handled)} with notes; cache {report.cache}")
    typer.echo(report.summary())


@app.command()
def stats(
    dataset: str = typer.Option(..., help=STATS_DATASET_HELP),
    root: Optional[Path] = typer.Option(None, help="dataset folder (annotation files)"),
    protocol: Literal["standard", "reference"] = typer.Option("standard", help="standard | reference"),
    as_json: bool = typer.Option(False, "--json", help="print the full statistics as JSON"),
) -> None:
    """Statistics from the annotation files: split sizes, classes, shots, constant floors.

    Example: avprompt data stats --dataset llp --root /data/LLP
    """
    from avprompt.data.stats import stats as compute

    try:
        s = compute(dataset, root, protocol)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(s, indent=1))
        return
    if s.get("kind") in ("avs", "avqa"):
        (_echo_avs if s["kind"] == "avs" else _echo_avqa)(s)
        if s["quirks"]:
            typer.echo("quirks: " + ", ".join(f"{k} {v}" for k, v in s["quirks"].items()))
        return
    typer.echo(f"{s['dataset']}: {s['rows']} rows, {s['classes']} classes, splits "
               + ", ".join(f"{k} {v}" for k, v in s["splits"].items())
               + f"; media present {s['media_present']}")
    typer.echo("shots (train size): " + ", ".join(f"K={k}: {v}" for k, v in s["shots"].items()))
    for task, by_protocol in s["floors"].items():
        for p, m in by_protocol.items():
            typer.echo(f"constant floor {task}/{p}: {m['primary_name']} {m['primary']:.2f}")
    if "avvp" in s:
        _echo_avvp(s["avvp"])
    if s["quirks"]:
        typer.echo("quirks: " + ", ".join(f"{k} {v}" for k, v in s["quirks"].items()))


def _echo_avs(s: dict) -> None:
    """AVSBench-object: rows and masks per split, categories, media present."""
    cats = f", {s['categories']} categories" if s["categories"] else ""
    typer.echo(f"{s['dataset']}: {s['rows']} rows{cats}, splits "
               + ", ".join(f"{k} {v}" for k, v in s["splits"].items()) + f" ({s['meta_file']})")
    typer.echo(f"{s['frames_per_video']} frames per video; masks "
               + ", ".join(f"{k} {v}" for k, v in s["masks"].items()))
    typer.echo("media present (videos): "
               + ", ".join(f"{k} {v}" for k, v in s["media_present"].items()))


def _echo_avqa(s: dict) -> None:
    """MUSIC-AVQA: questions per split (rows read, kept), groups and types, answers, media."""
    typer.echo(f"musicavqa ({s['source']}): {s['rows']} questions, splits "
               + ", ".join(f"{k} {v} (read {s['rows_read'][k]})" for k, v in s["splits"].items())
               + f"; {s['type_pairs']} question types, {s['answers']} answers")
    for split, types in s["types"].items():
        typer.echo(f"{split} types: " + ", ".join(f"{k} {v}" for k, v in types.items()))
    typer.echo(f"media present: {s['media_present']} of {s['videos']} videos (videos/<id>.mp4)")


def _echo_avvp(a: dict) -> None:
    """Dense AVVP annotations: coverage and events per split, then the test split's floors."""
    for split, x in a["splits"].items():
        line = f"avvp {split}: {x['videos']} videos, {x['videos_with_dense_rows']} with dense rows"
        if "audio_events" in x:
            line += (f"; events audio {x['audio_events']}, visual {x['visual_events']}, audio-visual "
                     f"{x['audio_visual_events']}; videos with audio-only {x['videos_with_audio_only_events']}, "
                     f"visual-only {x['videos_with_visual_only_events']}")
        typer.echo(line)
    for name, m in (a["splits"]["test"].get("floors") or {}).items():
        typer.echo(f"avvp test {name:<13} " + " ".join(f"{k} {v:.1f}" for k, v in m.items()))


@app.command("export-manifest")
def export_manifest_cmd(
    dataset: Optional[str] = typer.Option(None, help=DATASET_HELP + " (without it: print the "
                                          "manifest columns)"),
    root: Optional[Path] = typer.Option(None, help="dataset folder"),
    out: Optional[Path] = typer.Option(None, help="manifest to write (.csv or .jsonl)"),
) -> None:
    """Write a dataset's records as a manifest usable with --data manifest:FILE (media paths
    absolute); without --dataset, print the manifest format.

    Example: avprompt data export-manifest --dataset ave --root /data/AVE --out ave.csv
    """
    from avprompt.data.datasets import export_manifest, load_dataset

    if dataset is None:
        from avprompt.data.manifest import format_help
        typer.echo(format_help())
        return
    if out is None:
        _fail(ValueError("export-manifest needs --out FILE (.csv or .jsonl)"))
    try:
        index = load_dataset(dataset, root)
        path = export_manifest(index, out)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(f"wrote {len(index.records)} clips to {path}")


@app.command()
def synth(
    out: Optional[Path] = typer.Option(None, help="output folder (default: the SynthAV cache folder)"),
    size: Literal["tiny", "small", "medium"] = typer.Option("small", help="tiny | small | medium"),
    seed: int = typer.Option(0, help="world seed"),
    workers: int = typer.Option(2, help="parallel encoder processes"),
):
    """Generate the SynthAV world (AVE, LLP and VGG-Sound-40K formats, real mp4 files).

    Example: avprompt data synth --out /tmp/synthav --size tiny
    """
    from avprompt.synthav import default_world_dir, generate_world
    path = generate_world(out or default_world_dir(size, seed), size=size, seed=seed, workers=workers)
    typer.echo(f"SynthAV ({size}, seed {seed}) in {path}")
