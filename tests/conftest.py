"""Shared fixtures: tiny frozen encoders, tiny batches, the real annotation files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import avprompt  # noqa: F401  (HF_HUB_OFFLINE before laion_clap)

REPO = Path(__file__).resolve().parent.parent


def _annotations_root() -> Path | None:
    env = os.environ.get("AVPROMPT_ANNOTATIONS")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def annotations_root() -> Path:
    root = _annotations_root()
    if root is None:
        pytest.skip("real annotation files not found: set AVPROMPT_ANNOTATIONS to the folder holding "
                    "ave/, llp/ and vggsound/ (default ../shared/data)")
    return root


@pytest.fixture(scope="session")
def ave(annotations_root):
    """The real AVE annotation files, read by the AVE reader."""
    from avprompt.data.datasets import load_dataset
    return load_dataset("ave", annotations_root / "ave")


@pytest.fixture(scope="session")
def llp(annotations_root):
    """The real LLP (AVVP) annotation files, read by the LLP reader."""
    from avprompt.data.datasets import load_dataset
    return load_dataset("llp", annotations_root / "llp")


@pytest.fixture(scope="session")
def tiny_encoders():
    import torch
    from avprompt.encoders import load_encoders
    torch.manual_seed(0)
    return load_encoders("tiny")


def make_batch(encoders, task, batch_size: int = 2, seed: int = 0):
    """A random batch matching the method contract (see avprompt/method.py)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    b, t = batch_size, task.num_segments
    batch = {}
    if encoders.vision is not None:
        s = encoders.vision.image_size
        batch["frames"] = torch.randn(b, t, 3, s, s, generator=g)
    if encoders.audio is not None:
        batch["audio"] = torch.randn(b, t, encoders.audio.sample_rate, generator=g) * 0.1
    k = len(task.class_names)
    seg = torch.randint(0, k + 1, (b, t), generator=g)
    batch["segment_labels"] = seg
    batch["label"] = torch.arange(b) % k
    batch["video_labels"] = torch.nn.functional.one_hot(batch["label"], k).float()
    return batch


@pytest.fixture
def batch_factory():
    return make_batch


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A tiny SynthAV world (AVE, LLP, VGG-Sound-40K formats, real mp4 files) in a session cache;
    AVPROMPT_CACHE points there so media and feature caches stay out of the user's home."""
    cache = tmp_path_factory.mktemp("avprompt-cache")
    os.environ["AVPROMPT_CACHE"] = str(cache)
    from avprompt.synthav import default_world_dir, generate_world
    return Path(generate_world(default_world_dir("tiny", 0), size="tiny", seed=0))


@pytest.fixture
def tiny_env(tiny_world, monkeypatch):
    """The tiny SynthAV world as the default (supervised sets are generated beside it on demand)."""
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    return tiny_world


@pytest.fixture
def train_cfg(tmp_path):
    """``train_cfg(task=..., **fields)``: a tiny ``avprompt train`` config writing into tmp_path."""
    from avprompt.supervised.run import TrainConfig

    def make(**kw):
        return TrainConfig(**{"backbones": "tiny", "max_epochs": 2, "seeds": [1], "synth_size": "tiny",
                              "out": str(tmp_path), **kw})
    return make
