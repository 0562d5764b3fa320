"""``avprompt explain``: DG-SCT's attention maps on one clip and a t-SNE of frozen vs adapted features
(no torch import at module level)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer


def explain_command(
    cell: str = typer.Argument(..., metavar="CELL", help="a dg-sct cell's seed<S>.json (or seed<S>.ckpt.pt) "
                               "saved by `avprompt bench --save-checkpoints`"),
    video: str = typer.Argument(..., metavar="VIDEO", help="the clip whose attention maps to draw (mp4)"),
    out: Path = typer.Option(Path("explain"), "--out", help="folder for attention.png/.npz, tsne.png, explain.json"),
    pair: int = typer.Option(-1, "--pair", help="paired layer drawn in attention.png (-1 = last; all are in the .npz)"),
    data: str = typer.Option("synthav", "--data", help="dataset of the t-SNE split: synthav | DIR (standard layout)"),
    split: Literal["train", "val", "test"] = typer.Option("test", "--split", help="train | val | test: the clips of the t-SNE"),
    max_clips: int = typer.Option(32, "--max-clips", help="clips of the split in the t-SNE (0: no t-SNE)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
):
    """DG-SCT's spatial attention over the frames (A2V) and the spectrogram (V2A) of one clip with its
    temporal gates (paper fig. 3), and a t-SNE of frozen vs adapted features on a split with their
    silhouette scores (fig. 5).

    Example: avprompt explain runs/fewshot/.../ave/dg-sct@av/synthav/shots16/seed1.json clip.mp4 --out explain/
    """
    import torch

    from avprompt.data.media import MediaError, decode_clip
    from avprompt.engine.batches import clip_inputs
    from avprompt.explain import (attention_maps, feature_views, plot_attention, plot_tsne, save_maps,
                                  separation, write_summary)
    from avprompt.predict import load_cell

    if split not in ("train", "val", "test"):
        raise ValueError(f"--split {split!r}: use train, val or test")
    method, blob = load_cell(cell, device)
    enc = method.encoders
    try:
        frames, wave, _ = decode_clip(video, enc.vision.image_size, enc.audio.sample_rate)
    except MediaError as e:
        raise ValueError(f"{video}: {e}; give a readable mp4") from None
    batch = {k: v.to(device) for k, v in clip_inputs([(frames, wave)], enc.vision.image_mean, enc.vision.image_std,
                                                     method.task.num_segments, "va").items()}
    maps = attention_maps(method, batch)
    if not -len(method.pairs) <= pair < len(method.pairs):
        raise ValueError(f"--pair {pair}: this cell has {len(method.pairs)} paired layers (0..{len(method.pairs) - 1})")
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_attention(maps, out / "attention.png", pair,
                              f"{blob['method']} on {blob['task']['name']}: {Path(video).name}, pair {pair}"),
               save_maps(maps, out / "attention.npz")]
    info = {"cell": str(cell), "video": str(video), "method": blob["method"], "task": blob["task"]["name"],
            "pairs": [list(p) for p in method.pairs], "notes": maps.notes,
            "vision_map_mean": [round(float(m.mean()), 4) for m in maps.vision],
            "audio_map_mean": [round(float(m.mean()), 4) for m in maps.audio]}
    for side, g in (("v", maps.temporal_v), ("a", maps.temporal_a)):
        if g is not None:
            info[f"temporal_{side}"] = [round(float(x), 4) for x in g]
    if max_clips > 0:
        from avprompt.engine.workspace import Workspace
        ws = Workspace(data=data, backbones=blob["backbones"]["spec"], device=device)
        ws._encoders = enc  # the cell's own towers: load them once
        task = blob["task"]["name"]
        bad = ws.bad_clips(task)
        clips = ws.clips(task)
        records = [r for r in ws.index(task).split(split) if r.clip_id not in bad][:max_clips]
        if len(records) < 2:
            raise ValueError(f"--split {split}: {len(records)} clip(s) in {data}; the t-SNE needs at least 2")
        with torch.no_grad():
            views = feature_views(method, clips, records)
        scores = separation(views)
        written.append(plot_tsne(views, out / "tsne.png", scores))
        info.update({"tsne_split": split, "tsne_clips": len(records), "tsne_items": len(views["labels"]),
                     "silhouette": scores})
    written.append(write_summary(out / "explain.json", info))
    for p in written:
        typer.echo(f"wrote {p}")
    if "silhouette" in info:
        typer.echo("silhouette (cosine, higher = classes better separated): "
                   + ", ".join(f"{k} {v:+.3f}" for k, v in info["silhouette"].items()))
