"""``avprompt explain``: what a trained DG-SCT cell attends to, and what it does to the features.

Two pictures of the paper (fig. 3 and fig. 5), from a cell saved by ``bench --save-checkpoints``:

* **Attention maps of one clip** (``attention_maps``): the spatial attention M_s (eq. 4) of every
  paired layer, read from the modules' own forward pass by forward hooks (nothing is recomputed):
  A2V's map over each frame's patch grid (audio guiding vision) and V2A's map over HTS-AT's
  spectrogram tokens (vision guiding audio), unfolded to (frequency, time) the way the tower pools
  them (``AudioTower.time_grid``: HTS-AT cuts time into ``freq_ratio`` chunks stacked along
  frequency), and the temporal gates G (eq. 5) per segment. Maps of the ``attn`` and ``mlp``
  injection points of a pair are averaged. The audio map covers the tower's input window: a 1 s
  segment fills it by repeat-padding, so the map repeats along time.
* **Feature geometry on a split** (``feature_views``): the tower embeddings of a split's clips
  frozen and with the cell's modules injected (segment tasks: every segment, labelled by its event
  or "background"; video tasks: the clip mean, labelled by its first label), a 2-D t-SNE of each
  view, and the silhouette score of each view in its own space (cosine) so the picture comes
  with a number: higher = classes better separated.

Writes ``attention.png``, ``attention.npz``, ``tsne.png`` and ``explain.json`` into a folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

#: the methods whose modules this reads (DG-SCT's ``injections`` of ``DGSCTPair``s)
EXPLAINED = ("dg-sct",)


@dataclass
class AttentionMaps:
    """One clip's DG-SCT attention, T segments, P paired layers.

    frames: (T, S, S, 3) uint8, the frames the vision tower saw.
    spectrogram: (T, F_mel, N_frames) log-mel of each segment's audio as the audio tower sees it.
    vision: (P, T, gh, gw) A2V spatial map M_s per pair on the ViT patch grid (CLS token dropped).
    audio: P arrays (T, F, P_time): V2A spatial map per pair on the stage's unfolded token grid.
    temporal_v / temporal_a: (T,) the gates G^v / G^a of the pair that has them (None when off).
    """

    frames: np.ndarray
    spectrogram: np.ndarray
    vision: np.ndarray
    audio: list[np.ndarray]
    temporal_v: np.ndarray | None = None
    temporal_a: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _check(method) -> None:
    if method.key not in EXPLAINED or not hasattr(method, "injections"):
        raise ValueError(f"explain reads DG-SCT's attention modules; this cell is {method.key!r}: give a "
                         f"dg-sct cell (saved with `avprompt bench --methods dg-sct --save-checkpoints`)")
    if getattr(method.config, "audio_pass", "segment") != "segment":
        # the maps are drawn per 1 s segment over that segment's spectrogram; a clip pass has one
        # token grid per clip, seen under each frame's guidance (not drawn yet)
        raise ValueError("explain draws DG-SCT's maps per 1 s segment; this cell ran audio_pass="
                         f"{method.config.audio_pass}: explain a cell run with --audio-pass segment")


def unfold_audio_grid(m: np.ndarray, grid: tuple[int, int], freq_ratio: int) -> np.ndarray:
    """(N, H*W) token values on an HTS-AT stage grid -> (N, F, P) with time in order.

    Row index of the grid = (time chunk, frequency bin), chunk-major, as ``AudioTower.time_grid``
    undoes it. A stage whose height does not split into ``freq_ratio`` chunks is returned as is."""
    h, w = grid
    m = m.reshape(m.shape[0], h, w)
    if h % freq_ratio:
        return m
    fb = h // freq_ratio
    return m.reshape(m.shape[0], freq_ratio, fb, w).transpose(0, 2, 1, 3).reshape(m.shape[0], fb, freq_ratio * w)


def _log_mel(tower, audio: torch.Tensor) -> np.ndarray:
    """(T, S) waveforms -> (T, F_mel, N_frames) log-mel as HTS-AT computes it before its bn0."""
    h = tower.model.audio_branch
    x = h.logmel_extractor(tower.spectrogram(tower.fit_length(audio)))  # (T, 1, frames, mels)
    return x[:, 0].transpose(1, 2).float().numpy()


@torch.no_grad()
def attention_maps(method, batch: dict) -> AttentionMaps:
    """Run the cell once on a one-clip batch (frames (1, T, 3, S, S), audio (1, T, S_a)) and collect
    its spatial maps and temporal gates through forward hooks."""
    _check(method)
    vt, at = method.encoders.vision, method.encoders.audio
    got: dict[tuple, list] = {}
    handles = []

    def record_spatial(mod, key):
        """M_s's logit of ``mod`` on each call: the paper's spatial step runs as a bilinear form
        (``CrossModalAttention.spatial_logit``) that never calls ``sp_out`` as a module."""
        real = mod.spatial_logit

        def wrapped(g, x):
            out = real(g, x)
            got.setdefault(key, []).append(torch.sigmoid(out))
            return out
        mod.spatial_logit = wrapped  # on the instance; removing it restores the class's method
        return SimpleNamespace(remove=lambda: mod.__dict__.pop("spatial_logit", None))
    for name, pair in method.injections.items():
        k = int(name.split("_")[0])
        for side, mod in (("v", pair.a2v), ("a", pair.v2a)):
            if mod is None:
                continue
            if hasattr(mod, "sp_out") and mod.opts.spatial_kind == "paper":
                handles.append(record_spatial(mod, ("s", side, k)))
            elif hasattr(mod, "sp_out"):  # reference: sp_out runs as a module on the token-mean guide
                handles.append(mod.sp_out.register_forward_hook(
                    lambda _m, _i, out, key=("s", side, k): got.setdefault(key, []).append(torch.sigmoid(out))))
            if hasattr(mod, "t_out"):
                handles.append(mod.t_out.register_forward_hook(
                    lambda _m, _i, out, key=("t", side, k): got.setdefault(key, []).append(torch.sigmoid(out))))
    try:
        method.eval()
        method.embed(batch)
    finally:
        for h in handles:
            h.remove()
    T = batch["frames"].shape[1]
    notes = []
    vision, audio = [], []
    fr = int(getattr(at.model.audio_branch, "freq_ratio", 1))
    for k, (i, j) in enumerate(method.pairs):
        sv = got.get(("s", "v", k))
        if sv:
            m = torch.stack(sv).mean(0)[:, :, 0].float().numpy()  # (T, L_v)
            vision.append(m[:, 1:].reshape(T, *vt.grid))  # drop CLS
        sa = got.get(("s", "a", k))
        if sa:
            m = torch.stack(sa).mean(0)[:, :, 0].float().numpy()  # (T, L_a)
            audio.append(unfold_audio_grid(m, at.blocks[j].grid, fr))
    if not vision and not audio:
        notes.append("the spatial attention is off (use_spatial=false): no maps")
    # the gate of the last pair that has one (by default only the last pair does)
    gates = {side: next((torch.stack(v).mean(0).reshape(-1).float().numpy()
                         for (kind, s, _), v in sorted(got.items(), reverse=True) if kind == "t" and s == side), None)
             for side in ("v", "a")}
    mean = torch.tensor(vt.image_mean).view(3, 1, 1)
    std = torch.tensor(vt.image_std).view(3, 1, 1)
    frames = ((batch["frames"][0].cpu() * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
    return AttentionMaps(frames=frames, spectrogram=_log_mel(at, batch["audio"][0].cpu()),
                         vision=np.stack(vision) if vision else np.zeros((0, T, *vt.grid), np.float32),
                         audio=audio, temporal_v=gates["v"], temporal_a=gates["a"], notes=notes)


def _resize(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour (h, w) -> shape: token maps shown on the pixels they cover."""
    r = (np.arange(shape[0]) * m.shape[0] // shape[0])[:, None]
    c = (np.arange(shape[1]) * m.shape[1] // shape[1])[None, :]
    return m[r, c]


def plot_attention(maps: AttentionMaps, path: Path, pair: int = -1, title: str = "") -> Path:
    """Frames with the A2V map over them (top), spectrograms with the V2A map (bottom), one column
    per segment; the temporal gates in the column titles. ``pair``: which paired layer (-1 = last)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = maps.frames.shape[0]
    # one colour range per modality, shared by the segments (comparable across time): M_s sits in a
    # narrow band around its initial 0.5, so a fixed 0-1 range would show nothing
    ranges = {k: (float(m.min()), float(m.max())) for k, m in
              (("v", maps.vision[pair] if len(maps.vision) else None),
               ("a", maps.audio[pair] if maps.audio else None)) if m is not None}
    fig, axes = plt.subplots(2, T, figsize=(1.6 * T, 3.8), squeeze=False)
    for t in range(T):
        ax = axes[0][t]
        ax.imshow(maps.frames[t])
        if len(maps.vision):
            v = maps.vision[pair][t]
            ax.imshow(_resize(v, maps.frames.shape[1:3]), cmap="jet", alpha=0.45, vmin=ranges["v"][0],
                      vmax=ranges["v"][1])
        head = f"{t}s"
        if maps.temporal_v is not None:
            head += f"\nG$^v$ {maps.temporal_v[t]:.2f}"
        ax.set_title(head, fontsize=7)
        ax = axes[1][t]
        spec = maps.spectrogram[t]
        ax.imshow(spec, origin="lower", aspect="auto", cmap="gray")
        if maps.audio:
            a = maps.audio[pair][t]
            ax.imshow(_resize(a, spec.shape), origin="lower", aspect="auto", cmap="jet", alpha=0.45,
                      vmin=ranges["a"][0], vmax=ranges["a"][1])
        if maps.temporal_a is not None:
            ax.set_title(f"G$^a$ {maps.temporal_a[t]:.2f}", fontsize=7)
        for a_ in (axes[0][t], axes[1][t]):
            a_.set_xticks([])
            a_.set_yticks([])
    axes[0][0].set_ylabel("A2V: frames", fontsize=7)
    axes[1][0].set_ylabel("V2A: mel (freq up)", fontsize=7)
    span = "; ".join(f"{'A2V' if k == 'v' else 'V2A'} M_s {lo:.3f} (blue) to {hi:.3f} (red)"
                     for k, (lo, hi) in ranges.items())
    fig.suptitle((title + "\n" if title else "") + f"spatial attention: {span}; temporal gates G in the titles",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def feature_views(method, clips, records, batch_size: int = 4) -> dict:
    """Frozen vs adapted tower embeddings of ``records`` (decoded by ``clips.inputs``).

    Returns {"labels": list[str] (one per item), "views": {"vision frozen", "vision DG-SCT",
    "audio frozen", "audio DG-SCT"}: (N_items, D) arrays}."""
    _check(method)
    enc, task = method.encoders, method.task
    names = list(task.class_names)
    views: dict[str, list] = {"vision frozen": [], "vision DG-SCT": [], "audio frozen": [], "audio DG-SCT": []}
    labels: list[str] = []
    method.eval()
    for s in range(0, len(records), batch_size):
        recs = records[s:s + batch_size]
        batch = clips.inputs(recs, "va")
        fv, fa = enc.encode(batch, "v"), enc.encode(batch, "a")  # (B, T, D)
        gv, ga = method.embed(batch)
        for key, x in (("vision frozen", fv), ("vision DG-SCT", gv), ("audio frozen", fa), ("audio DG-SCT", ga)):
            x = x.float()
            views[key].append((x.flatten(0, 1) if task.level == "segment" else x.mean(1)).numpy())
        for r in recs:
            if task.level == "segment":
                labels += [names[c] if c >= 0 else "background" for c in r.segment_labels[:fv.shape[1]]]
            else:
                labels.append(names[r.video_labels[0]] if r.video_labels else "none")
    return {"labels": labels, "views": {k: np.concatenate(v) for k, v in views.items()}}


def separation(views: dict) -> dict:
    """Silhouette score (cosine, original space) of each view; needs >= 2 labels."""
    from sklearn.metrics import silhouette_score
    labels = np.asarray(views["labels"])
    if len(set(labels)) < 2:
        return {}
    return {k: round(float(silhouette_score(x, labels, metric="cosine")), 4) for k, x in views["views"].items()}


def plot_tsne(views: dict, path: Path, scores: dict | None = None, seed: int = 0) -> Path:
    """2 x 2 panels (vision / audio x frozen / DG-SCT), one colour per label, background grey."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    labels = np.asarray(views["labels"])
    kinds = sorted(set(labels), key=lambda n: (n == "background", n))
    colours = {n: ("#bbbbbb" if n == "background" else plt.get_cmap("tab10")(i % 10)) for i, n in enumerate(kinds)}
    fig, axes = plt.subplots(2, 2, figsize=(8, 7.4))
    n = len(labels)
    for ax, (key, x) in zip(axes.flat, views["views"].items()):
        xy = TSNE(n_components=2, perplexity=max(2.0, min(30.0, (n - 1) / 3)), init="pca",
                  random_state=seed).fit_transform(x.astype(np.float64))
        for name in kinds:
            sel = labels == name
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=colours[name], label=name)
        ax.set_title(key + (f"  (silhouette {scores[key]:+.3f})" if scores and key in scores else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=7, markerscale=2)
    fig.suptitle(f"t-SNE of tower embeddings, {n} items", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_maps(maps: AttentionMaps, path: Path) -> Path:
    arrays = {"frames": maps.frames, "spectrogram": maps.spectrogram, "vision": maps.vision}
    arrays.update({f"audio_pair{k}": a for k, a in enumerate(maps.audio)})
    for side, g in (("v", maps.temporal_v), ("a", maps.temporal_a)):
        if g is not None:
            arrays[f"temporal_{side}"] = g
    np.savez_compressed(path, **arrays)
    return path


def write_summary(path: Path, info: dict) -> Path:
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path
