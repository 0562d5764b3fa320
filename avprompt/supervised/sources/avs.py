"""Source ``avs``: AVSBench-object audio-visual segmentation (``avs-s4``, ``avs-ms3``).

Data: ``<data root>/<task.dataset>/`` (``avsbench``: it holds ``Single-source/`` and/or
``Multi-sources/`` in the release layout, ``avprompt.data.avsbench``). On ``--data synthav`` a
missing subset is generated there (``avprompt.synthav.avs_set.generate_avs``, first use only).

An example is one ``AVSRecord`` (a 5-second video); a video whose frames, masks or wav are
missing is bad media: left out and counted (``extra()["bad_media"]``). Each video is decoded once
into the on-disk cache (``<AVPROMPT_CACHE>/avs/``, keyed by the files' stamps and the towers' input
sizes); memory holds the most recently used ``MEMORY_VIDEOS``. Batches (B videos, T = 5):

    frames      (B, 5, 3, S, S)  the 5 PNG frames, PIL-bilinear resized to the vision tower's
                                 ``image_size``, normalised with its mean / std
    audio       (B, 5, sr)       the wav cut into five 1-s segments at the audio tower's rate
                                 (the reference feeds VGGish log-mels; here the CLAP tower hears
                                 the clip's own waveform)
    masks       (B, 5, H, W)     float 0/1 at the masks' own size (224 x 224); zeros where a frame
                                 has no mask
    mask_valid  (B, 5) bool      frames that have a mask (S4 train: frame 1 only, as the reference
                                 trains S4; everything else: all 5)
    feat_a      (B, 5, D_a)      encoder mode ``frozen`` only: the frozen audio embeddings, encoded
                                 once per split (the towers' output does not change)

Scores (``score``), in percent: ``miou`` (primary; mean IoU over all frames, the reference's
per-frame mean, ``avprompt.data.avs_metrics``) and ``fscore`` (max over thresholds of the mean
F curve). ``per_unit`` holds the per-video mean IoU only: every video has 5 scored frames, so its
mean is the frame mean and the paired bootstrap can resample videos; the F-score is a maximum of
a mean curve, not a mean of per-video numbers, so it is reported as an aggregate only (and gets no
entry in ``floors``; ``extra()["avs_floors"]`` lists every constant predictor on both metrics).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from avprompt.supervised.sources import Source, register_source

SECONDS = 5  # AVSBench-object: 5 frames, one per second
SUBSETS = {"avs-s4": "s4", "avs-ms3": "ms3"}
FLOOR_PREDICTORS = ("all_background", "all_foreground", "centre_box")
#: decoded videos held in memory per source (~2 MB each at 224 px and 48 kHz); the rest are read
#: back from the on-disk cache
MEMORY_VIDEOS = 512
#: version of the on-disk decoded-video format (part of every cached file's name)
DISK_FORMAT = 1


def _subset(task) -> str:
    if task.name in SUBSETS:
        return SUBSETS[task.name]
    tail = task.name.rsplit("-", 1)[-1]
    if tail not in ("s4", "ms3"):
        raise ValueError(f"task {task.name}: source 'avs' reads AVSBench-object S4 or MS3; name the task "
                         "...-s4 or ...-ms3")
    return tail


def read_wav(path: str, rate: int) -> np.ndarray:
    """float32 (SECONDS, rate): the wav as mono in [-1, 1], resampled to ``rate``, padded / cut to 5 s."""
    from math import gcd

    from scipy.io import wavfile
    from scipy.signal import resample_poly
    sr, x = wavfile.read(path)
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr != rate:
        g = gcd(int(sr), int(rate))
        x = resample_poly(x, rate // g, sr // g).astype(np.float32)
    n = SECONDS * rate
    x = np.pad(x[:n], (0, max(0, n - len(x))))
    return x.reshape(SECONDS, rate)


@register_source("avs")
class AVSSource(Source):

    def __init__(self, ws, task):
        super().__init__(ws, task)
        self.subset = _subset(task)
        self._splits = None
        # (split, video_id) -> decoded arrays, the MEMORY_VIDEOS most recently used; every decoded
        # video is also kept on disk (``disk_path``): the real S4 train split (3,452 videos, ~2 MB
        # each decoded) does not fit in memory, and the next run skips PNG / wav decoding
        self._cache: OrderedDict[tuple[str, str], tuple] = OrderedDict()
        self._feat_a: dict[str, torch.Tensor] = {}
        self._floors: dict[str, dict] = {}
        self._mask_size = None

    # ----- examples ------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        kind, root = self.ws.root
        if kind != "dir":
            raise ValueError(f"task {self.task.name} reads AVSBench-object frames and masks; --data must be "
                             "synthav or a folder holding avsbench/, not a manifest")
        return Path(root) / self.task.dataset

    def splits(self) -> dict[str, list]:
        if self._splits is None:
            from avprompt.data.avsbench import SUBSET_DIRS, read_avsbench
            folder, sub = self.folder, SUBSET_DIRS[self.subset]
            meta = f"{self.subset}_meta_data.csv"
            if self.ws.data == "synthav" and not (folder / sub / "synthav_avs.json").is_file():
                from avprompt.synthav.avs_set import generate_avs
                print(f"generating the SynthAV {self.subset.upper()} set ({self.ws.synth_size}, seed "
                      f"{self.ws.synth_seed}) into {folder} (first use only)", file=sys.stderr, flush=True)
                generate_avs(folder, self.subset, size=self.ws.synth_size, seed=self.ws.synth_seed)
            if not ((folder / sub / meta).is_file() or (folder / meta).is_file()):
                raise FileNotFoundError(f"task {self.task.name} needs {folder / sub / meta} (AVSBench-object: "
                                        f"{sub}/{meta} and {sub}/{self.subset}_data/ with visual_frames/, "
                                        "gt_masks/, audio_wav/)")
            self.index = read_avsbench(folder, self.subset)
            ok, self.bad = {}, []
            for r in self.index.records:
                files = r.frames + r.masks + [r.audio]
                (ok.setdefault(r.split, []) if all(Path(p).is_file() for p in files) else self.bad).append(r)
            self._splits = self.require_splits({s: ok.get(s, []) for s in ("train", "val", "test")},
                                               f"the AVSBench {self.subset.upper()} data at {folder} "
                                               f"(after {len(self.bad)} bad media)")
        return self._splits

    @property
    def class_names(self) -> list[str]:
        """S4: its categories (one sounding category per video); MS3: ["foreground"]. The mask head
        does not read them (a mask is class-agnostic); they name what the records hold."""
        self.splits()
        return list(self.index.categories) or ["foreground"]

    # ----- decoding ------------------------------------------------------------------------------
    def disk_path(self, r) -> Path:
        """Where video ``r`` decoded for these towers lives: ``<cache>/avs/<video>-<hash>.npz``, the
        hash over the files' real paths and ``size:mtime`` stamps (an edited file is decoded again),
        the towers' frame size and audio rate, and ``DISK_FORMAT``."""
        from avprompt.data.prepare import _sha, media_stamp
        from avprompt.engine.workspace import cache_root
        enc = self.ws.encoders
        files = [*r.frames, *r.masks, r.audio]
        ident = json.dumps([DISK_FORMAT, enc.vision.image_size, enc.audio.sample_rate, list(r.mask_frames),
                            [(os.path.realpath(p), media_stamp(p)) for p in files]])
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(r.video_id))[:80]
        return cache_root() / "avs" / f"{stem}-{_sha(ident, 16)}.npz"

    def _read_video(self, r) -> tuple:
        """Decode the PNGs and the wav: frames uint8 (5, S, S, 3), audio float32 (5, sr), masks
        uint8 (5, H, W) at this video's own mask size, valid bool (5,)."""
        from PIL import Image
        enc = self.ws.encoders
        size, rate = enc.vision.image_size, enc.audio.sample_rate
        frames = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
                           for p in r.frames])
        masks, own = [], None
        for p in r.masks:
            m = Image.open(p).convert("L")
            own = own or m.size
            if m.size != own:  # one size per video (the first mask's); per batch: ``_decode``
                m = m.resize(own, Image.NEAREST)
            masks.append(np.asarray(m) > 127)
        w, h = own or (1, 1)
        full = np.zeros((SECONDS, h, w), np.uint8)
        valid = np.zeros(SECONDS, bool)
        for k, m in zip(r.mask_frames, masks):
            full[k], valid[k] = m, True
        return frames, read_wav(r.audio, rate), full, valid

    def _decode(self, r) -> tuple:
        """-> frames uint8 (5, S, S, 3), audio float32 (5, sr), masks uint8 (5, H, W), valid bool (5,):
        from memory, else from the on-disk cache, else decoded (and written there)."""
        key = (r.split, r.video_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self.disk_path(r)
        arrays = None
        if path.is_file():
            try:
                with np.load(path) as z:
                    arrays = (z["frames"], z["audio"], z["masks"], z["valid"])
            except (OSError, ValueError, KeyError):  # a truncated or foreign file: decode again
                arrays = None
        if arrays is None:
            arrays = self._read_video(r)
            from avprompt.atomic import atomic_write
            atomic_write(path, lambda f: np.savez(
                f, frames=arrays[0], audio=arrays[1], masks=arrays[2], valid=arrays[3]))
        frames, audio, full, valid = arrays
        # one mask size per batch: the first video's (224 x 224 as released)
        self._mask_size = self._mask_size or (full.shape[2], full.shape[1])
        if (full.shape[2], full.shape[1]) != self._mask_size:
            from PIL import Image
            full = np.stack([np.asarray(Image.fromarray(m).resize(self._mask_size, Image.NEAREST)) for m in full])
        self._cache[key] = (frames, audio, full, valid)
        while len(self._cache) > MEMORY_VIDEOS:
            self._cache.popitem(last=False)
        return self._cache[key]

    def _inputs(self, chunk) -> dict:
        vt = self.ws.encoders.vision
        arrays = [self._decode(r) for r in chunk]
        mean = torch.tensor(vt.image_mean, dtype=torch.float32).view(1, 1, 3, 1, 1)
        std = torch.tensor(vt.image_std, dtype=torch.float32).view(1, 1, 3, 1, 1)
        f = torch.from_numpy(np.stack([a[0] for a in arrays])).permute(0, 1, 4, 2, 3).float().div_(255.0)
        return {"frames": (f - mean) / std,
                "audio": torch.from_numpy(np.stack([a[1] for a in arrays])),
                "masks": torch.from_numpy(np.stack([a[2] for a in arrays])).float(),
                "mask_valid": torch.from_numpy(np.stack([a[3] for a in arrays]))}

    @torch.no_grad()
    def _frozen_audio(self, split: str) -> torch.Tensor:
        """(N, 5, D_a) frozen audio embeddings of a split, computed once (encoder mode ``frozen``)."""
        if split not in self._feat_a:
            enc, recs, parts = self.ws.encoders, self.splits()[split], []
            for s in range(0, len(recs), 16):
                audio = torch.from_numpy(np.stack([self._decode(r)[1] for r in recs[s: s + 16]]))
                parts.append(enc.encode({"audio": audio.to(self.ws.device)}, "a").float().cpu())
            self._feat_a[split] = torch.cat(parts)
        return self._feat_a[split]

    def batches(self, model, split: str, batch_size: int, shuffle_seed: int | None = None):
        from avprompt.engine.batches import iterate
        records = self.splits()[split]
        frozen = model.mode.runs_on == "features"
        row = {id(r): i for i, r in enumerate(records)}

        def make(chunk):
            b = self._inputs(chunk)
            if frozen:
                b["feat_a"] = self._frozen_audio(split)[torch.tensor([row[id(r)] for r in chunk])]
            return b
        return iterate(records, batch_size, make, shuffle_seed)

    # ----- scoring -------------------------------------------------------------------------------
    def _truth(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of a split: masks uint8 (N, 5, H, W), valid bool (N, 5)."""
        arrays = [self._decode(r) for r in self.splits()[split]]
        return np.stack([a[2] for a in arrays]), np.stack([a[3] for a in arrays])

    def score(self, preds: dict, split: str) -> tuple[dict, dict]:
        """preds["mask_prob"] (N, 5, H, W) -> ({"miou", "fscore"} in percent, {"miou": (N,) per-video})."""
        from avprompt.data.avs_metrics import avs_scores
        gts, valid = self._truth(split)
        prob = np.asarray(preds["mask_prob"], np.float32)
        if prob.shape != gts.shape:
            raise ValueError(f"task {self.task.name}: mask_prob is {prob.shape}, the {split} masks are "
                             f"{gts.shape}; the head must predict at the masks' size")
        s = avs_scores(prob[valid], gts[valid], aggregation="frame", return_per_frame=True)
        per_frame = np.full(valid.shape, np.nan)
        per_frame[valid] = s["per_frame_iou"]
        per_video = np.nanmean(per_frame, axis=1) * 100
        return {"miou": s["miou"] * 100, "fscore": s["fscore"] * 100}, {"miou": per_video}

    def avs_floors(self, split: str) -> dict:
        """{predictor: {"miou", "fscore"}} in percent: the constant maps of ``avs_floors``."""
        if split not in self._floors:
            from avprompt.data.avs_metrics import avs_floors
            gts, valid = self._truth(split)
            f = avs_floors(gts[valid])
            self._floors[split] = {k: {m: f[k][m] * 100 for m in ("miou", "fscore")} for k in FLOOR_PREDICTORS}
        return self._floors[split]

    def floors(self, split: str, metrics) -> dict:
        """Best constant map per metric (all background / all foreground / centre box), percent."""
        table = self.avs_floors(split)
        return {m: max(v[m] for v in table.values()) for m in metrics if m in ("miou", "fscore")}

    def ids(self, split: str):
        return np.array([r.video_id for r in self.splits()[split]])

    def stored_predictions(self, preds: dict) -> dict:
        """A uint8 thumbnail of the probabilities, ``mask_prob_u8`` (N, 5, 28, 28) = round(255 p)
        area-averaged (a 224-px float map per frame would be ~1 MB per video); the scores are
        stored beside it per video."""
        p = torch.as_tensor(np.asarray(preds["mask_prob"], np.float32))
        small = torch.nn.functional.adaptive_avg_pool2d(p.flatten(0, 1)[:, None], 28)[:, 0]
        return {"mask_prob_u8": (small * 255).round().to(torch.uint8).view(*p.shape[:2], 28, 28).numpy()}

    def data_identity(self) -> dict:
        self.splits()
        kind, root = self.ws.root
        rows = [(r.video_id, r.split, r.category) for r in self.index.records]
        h = hashlib.sha256(self.index.meta_file.read_bytes())
        h.update(json.dumps(rows).encode())
        location = self.ws.data_id if self.ws.data == "synthav" else f"{kind}:{Path(root).resolve()}"
        return {"location": location, "dataset": f"avsbench-{self.subset}", "annotations": h.hexdigest()[:16]}

    def extra(self) -> dict:
        return {**super().extra(), "bad_media": len(self.bad), "subset": self.subset,
                "avs_floors": self.avs_floors("test")}
