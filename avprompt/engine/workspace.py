"""What one sweep process loads once and every cell reuses: datasets, frozen encoders, decoded
clips and frozen features.

Data locations (``--data``): ``synthav`` (the embedded world, generated on first use), a folder
holding ``ave/``, ``llp/``, ``vggsound40k/`` (or ``vggsound/``) in their standard layouts, or
``manifest:FILE`` (the user's own clips; every task reads the manifest's classes).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from avprompt.data.records import DatasetIndex


def cache_root() -> Path:
    return Path(os.environ.get("AVPROMPT_CACHE", Path.home() / ".cache" / "avprompt"))


def resolve_data_root(data: str, synth_size: str = "small", synth_seed: int = 0) -> tuple[str, Path | None]:
    """(kind, root): kind "dir" | "manifest"; generates the SynthAV world when data == "synthav"."""
    if data.startswith("manifest:"):
        path = Path(data.split(":", 1)[1])
        if not path.is_file():
            raise FileNotFoundError(f"--data {data}: manifest file {path} does not exist")
        return "manifest", path
    if data == "synthav":
        from avprompt.synthav import default_world_dir, generate_world
        out = default_world_dir(size=synth_size, seed=synth_seed)
        if not (out / "synthav.json").is_file():
            import sys
            print(f"generating the SynthAV world ({synth_size}, seed {synth_seed}) into {out} "
                  "(first use only; about a minute)", file=sys.stderr, flush=True)
        return "dir", Path(generate_world(out, size=synth_size, seed=synth_seed))
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder; pass synthav, a folder with ave/ llp/ "
                                "vggsound40k/ inside, or manifest:FILE")
    return "dir", root


class Workspace:
    """Per-process state shared by the cells of a sweep (built lazily, reused across cells)."""

    def __init__(self, data: str = "synthav", backbones: str = "synthav", device: str = "auto",
                 synth_size: str = "small", synth_seed: int = 0, workers: int = 1,
                 feature_cache: bool = True):
        self.data, self.backbones = data, backbones
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if device == "auto" else device))
        self.synth_size, self.synth_seed, self.workers = synth_size, synth_seed, workers
        self.use_feature_cache = feature_cache
        self._root = None
        self._indexes: dict[str, DatasetIndex] = {}
        self._clips: dict[str, object] = {}
        self._features: dict[tuple, dict] = {}
        self._encoders = None
        self._fc = None
        self._bad: dict[str, set[str]] = {}
        self._changed: dict[str, int] = {}
        self._fingerprints: dict[str, str] = {}
        self._feature_ids: dict[tuple, str] = {}
        self._feature_sets: dict[tuple, torch.Tensor] = {}  # recent sets, least recent first

    # ------------------------------------------------------------------------------------------
    @property
    def root(self):
        if self._root is None:
            self._root = resolve_data_root(self.data, self.synth_size, self.synth_seed)
        return self._root

    @property
    def data_id(self) -> str:
        kind, root = self.root
        return f"synthav-{self.synth_size}-{self.synth_seed}" if self.data == "synthav" else f"{kind}:{root}"

    def data_identity(self, task: str) -> dict:
        """{"location", "annotations"}: where the data is and a fingerprint of what its annotation
        files say (classes and every clip's id, split, labels and media path, as read), so an
        edited annotation file or another folder is another experiment."""
        import hashlib
        import json
        index = self.index(task)
        kind, root = self.root
        base = Path(root).resolve()

        def media(path) -> str:  # relative to the data folder: where a cache lives is not the data
            try:
                return str(Path(path).resolve().relative_to(base))
            except (TypeError, ValueError):
                return str(path)
        if index.name not in self._fingerprints:
            payload = [index.name, list(index.classes)] + [
                [r.clip_id, r.video_id, media(r.media), r.split, list(r.segment_labels), list(r.video_labels),
                 r.audio_segments, r.visual_segments] for r in index.records]
            blob = json.dumps(payload, sort_keys=True, default=str).encode()
            self._fingerprints[index.name] = hashlib.sha256(blob).hexdigest()[:16]
        location = self.data_id if self.data == "synthav" else f"{kind}:{Path(root).resolve()}"
        return {"location": location, "dataset": index.name, "annotations": self._fingerprints[index.name]}

    @property
    def backbone_identity(self) -> dict:
        """Architecture and weights fingerprint of the frozen towers (rebuilt weights = another
        experiment). From the spec while the towers are not built, so a rerun with nothing to do
        never builds them."""
        if self._encoders is not None:
            ident = getattr(self._encoders, "identity", None)
            return dict(ident) if ident else {"name": self._encoders.name, "spec": self.backbones}
        from avprompt.encoders import spec_identity
        return spec_identity(self.backbones)

    @property
    def backbone_name(self) -> str:
        """The towers' short name (result paths), without building them."""
        if self._encoders is not None:
            return self._encoders.name
        from avprompt.encoders import BackboneSpec
        return BackboneSpec.parse(self.backbones).name

    def media_summary(self, tasks) -> str:
        """One line: clips left out as bad media and clips re-decoded because their file changed."""
        bad, changed = 0, 0
        for name in dict.fromkeys(self.index(t).name for t in tasks):
            task = next(t for t in tasks if self.index(t).name == name)
            bad += len(self.bad_clips(task))
            changed += self._changed.get(name, 0)
        parts = []
        if bad:
            parts.append(f"{bad} clips skipped as bad media (see `avprompt data stats`)")
        if changed:
            parts.append(f"{changed} clips re-decoded because their file changed")
        return "; ".join(parts)

    def index(self, task) -> DatasetIndex:
        """The dataset ``task`` (a name or its ``Task``) reads: its ``Task.dataset`` folder, or the
        manifest. Any registered task, supervised ones included."""
        from avprompt.data.datasets import load_dataset
        from avprompt.tasks import get_task
        kind, root = self.root
        t = get_task(task)
        name = t.dataset
        key = "manifest" if kind == "manifest" else name
        if key not in self._indexes:
            if kind == "manifest":
                self._indexes[key] = load_dataset(f"manifest:{root}")
            else:
                sub = root / name
                if name == "vggsound40k" and not sub.is_dir() and (root / "vggsound").is_dir():
                    sub = root / "vggsound"
                if not sub.is_dir():
                    raise FileNotFoundError(f"task {t.name} needs {sub} (the {name} dataset in its standard layout)")
                self._indexes[key] = load_dataset(name, sub)
        return self._indexes[key]

    def add_index(self, index: DatasetIndex) -> DatasetIndex:
        """Register an index an example source built itself (videos of a question set), so that
        ``clips`` / ``features`` / ``bad_clips`` decode and cache its media like a dataset's; the
        first one registered under a name is kept."""
        return self._indexes.setdefault(index.name, index)

    @property
    def encoders(self):
        if self._encoders is None:
            from avprompt.encoders import load_encoders
            self._encoders = load_encoders(self.backbones).to(self.device)
        return self._encoders

    def clips(self, task: str):
        """Decoded clips of the task's dataset at the encoders' preprocessing. The dataset's media
        are prepared once (resumable; bad media are skipped and listed in the cache's report)."""
        from avprompt.data.prepare import MediaCache, prepare
        from avprompt.engine.batches import ClipTensors

        index = self.index(task)
        if index.name not in self._clips:
            enc = self.encoders
            size = enc.vision.image_size if enc.vision is not None else 32
            rate = enc.audio.sample_rate if enc.audio is not None else 16000
            report = prepare(index, cache_root() / "media", image_size=size, sample_rate=rate,
                             workers=self.workers, on_bad_media="skip", progress=False)
            self._bad[index.name] = report.bad_clip_ids
            self._changed[index.name] = int(getattr(report, "redecoded", 0) or 0)
            mean = enc.vision.image_mean if enc.vision is not None else (0.5, 0.5, 0.5)
            std = enc.vision.image_std if enc.vision is not None else (0.5, 0.5, 0.5)
            cache = MediaCache.open(cache_root() / "media", index.name, size, rate)
            self._clips[index.name] = ClipTensors(cache, mean, std)
        return self._clips[index.name]

    def _feature_id(self, record) -> str:
        """``<clip id>-<short hash of the media file's size and mtime>`` (computed once per clip)."""
        import hashlib

        from avprompt.data.prepare import media_stamp
        fid = self._feature_ids.get((record.clip_id, record.media))
        if fid is None:
            stamp = hashlib.sha256(media_stamp(record.media).encode()).hexdigest()[:10]
            fid = self._feature_ids[(record.clip_id, record.media)] = f"{record.clip_id}-{stamp}"
        return fid

    def bad_clips(self, task: str) -> set[str]:
        """Clip ids whose media could not be decoded (left out of every split, reported)."""
        self.clips(task)
        return self._bad[self.index(task).name]

    def features(self, task: str, modality: str, records, audio_pass: str = "segment") -> torch.Tensor:
        """Frozen pooled features (N, T, D) of ``records``: each clip is encoded once per backbone
        and preprocessing, kept on disk (``engine.feature_cache``) and reused by every method,
        shot count and seed; keyed by the data location too, so two datasets named "ave" never
        share features."""
        from avprompt.engine.feature_cache import FeatureCache

        index = self.index(task)
        if self._fc is None:
            import tempfile
            root = cache_root() / "features" if self.use_feature_cache else tempfile.mkdtemp(prefix="avp-feat-")
            self._fc = FeatureCache(root, memory=True)
        # a clip's features are keyed by its media file's current version too (size, mtime):
        # a video replaced in place is re-encoded, never served its old features
        by_id = {self._feature_id(r): r for r in records}
        # The same sets come back every epoch and validation (50 epochs x train + val per cell);
        # each cache lookup fingerprints the tower and stacks the clips (~20% of a cached-feature
        # cell's time), so the stacked set is kept for this process. Safe: the towers are frozen
        # for the workspace's life (tests assert no encoder weight trains) and the ids carry the
        # media versions. Callers index or normalise it, never write into it.
        memo_key = (task, modality, audio_pass, tuple(by_id))
        if memo_key in self._feature_sets:
            self._feature_sets[memo_key] = self._feature_sets.pop(memo_key)  # most recent last
            return self._feature_sets[memo_key]

        def loader(missing):
            clips = self.clips(task)
            for s in range(0, len(missing), 16):
                chunk = [by_id[c] for c in missing[s: s + 16]]
                yield {k: v.to(self.device) for k, v in clips.inputs(chunk, modality).items()}

        feats = self._fc.get_or_compute(self.encoders, modality, [self._feature_id(r) for r in records], loader,
                                        dataset=f"{self.data_id}/{index.name}",
                                        preprocessing={"segments": 10, "frame_rule": "segment centre"},
                                        audio_pass=audio_pass)
        self._feature_sets[memo_key] = feats
        while len(self._feature_sets) > 64:  # a cell uses 3 sets per modality; old cells' go first
            self._feature_sets.pop(next(iter(self._feature_sets)))
        return feats
