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

TASK_DATASET = {"ave": "ave", "ave-cls": "ave", "llp-cls": "llp", "vggsound40k": "vggsound40k",
                "vggsound": "vggsound"}


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

    def index(self, task: str) -> DatasetIndex:
        from avprompt.data.datasets import load_dataset
        kind, root = self.root
        name = TASK_DATASET.get(task)
        if name is None:
            raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASK_DATASET)}")
        key = "manifest" if kind == "manifest" else name
        if key not in self._indexes:
            if kind == "manifest":
                self._indexes[key] = load_dataset(f"manifest:{root}")
            else:
                sub = root / name
                if name == "vggsound40k" and not sub.is_dir() and (root / "vggsound").is_dir():
                    sub = root / "vggsound"
                if not sub.is_dir():
                    raise FileNotFoundError(f"task {task} needs {sub} (the {name} dataset in its standard layout)")
                self._indexes[key] = load_dataset(name, sub)
        return self._indexes[key]

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
            mean = enc.vision.image_mean if enc.vision is not None else (0.5, 0.5, 0.5)
            std = enc.vision.image_std if enc.vision is not None else (0.5, 0.5, 0.5)
            cache = MediaCache.open(cache_root() / "media", index.name, size, rate)
            self._clips[index.name] = ClipTensors(cache, mean, std)
        return self._clips[index.name]

    def bad_clips(self, task: str) -> set[str]:
        """Clip ids whose media could not be decoded (left out of every split, reported)."""
        self.clips(task)
        return self._bad[self.index(task).name]

    def features(self, task: str, modality: str, records) -> torch.Tensor:
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
        by_id = {r.clip_id: r for r in records}

        def loader(missing):
            clips = self.clips(task)
            for s in range(0, len(missing), 16):
                chunk = [by_id[c] for c in missing[s: s + 16]]
                yield {k: v.to(self.device) for k, v in clips.inputs(chunk, modality).items()}

        return self._fc.get_or_compute(self.encoders, modality, [r.clip_id for r in records], loader,
                                       dataset=f"{self.data_id}/{index.name}",
                                       preprocessing={"segments": 10, "frame_rule": "segment centre"})
