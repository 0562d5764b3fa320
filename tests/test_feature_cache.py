"""The frozen-feature cache: keys, hits and misses, atomic files, and training from cached features."""
from __future__ import annotations

import pytest
import torch

from avprompt.encoders import load_encoders
from avprompt.engine.feature_cache import FeatureCache, encode_clips, weights_fingerprint
from avprompt.registry import discover
from avprompt.task import TaskSpec

TASK = TaskSpec("ave", "segment", ("dog bark", "car horn", "violin"), num_segments=3)
IDS = ["vid_a", "vid b/1", "vid_c", "vid_d"]  # odd characters: file names must stay safe


@pytest.fixture
def clips(tiny_encoders, batch_factory):
    """Deterministic inputs per clip id and a loader that records which ids it was asked for."""
    data = {cid: batch_factory(tiny_encoders, TASK, batch_size=1, seed=i) for i, cid in enumerate(IDS)}
    calls = []

    def loader(ids, batch_size=3):
        calls.append(list(ids))
        for s in range(0, len(ids), batch_size):
            chunk = ids[s: s + batch_size]
            yield {k: torch.cat([data[c][k] for c in chunk]) for k in ("frames", "audio", "segment_labels")}
    return data, loader, calls


def test_hit_after_miss_and_same_numbers(tmp_path, tiny_encoders, clips):
    data, loader, calls = clips
    cache = FeatureCache(tmp_path)
    first = cache.get_or_compute(tiny_encoders, "v", IDS, loader, dataset="ave", preprocessing={"segments": 3})
    assert first.shape == (4, 3, tiny_encoders.vision.embed_dim) and calls == [IDS]
    direct = encode_clips(tiny_encoders, "v", loader(IDS))
    assert torch.equal(first, direct)
    calls.clear()
    again = cache.get_or_compute(tiny_encoders, "v", IDS[::-1], loader, dataset="ave", preprocessing={"segments": 3})
    assert calls == [] and torch.equal(again, first.flip(0))
    # a new process (no memory) reads the files; only the new clip is encoded
    disk = FeatureCache(tmp_path, memory=False)
    out = disk.get_or_compute(tiny_encoders, "v", IDS[:2], loader, dataset="ave", preprocessing={"segments": 3})
    assert calls == [] and torch.equal(out, first[:2])
    assert disk.stats == {"hits": 2, "misses": 0}
    folder = cache.folder(tiny_encoders, "v", "ave", {"segments": 3})
    assert len(list(folder.glob("*.npy"))) == 4 and (folder / "key.json").is_file()
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_partial_hit_encodes_only_missing(tmp_path, tiny_encoders, clips):
    _, loader, calls = clips
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(tiny_encoders, "a", IDS[:2], loader)
    out = cache.get_or_compute(tiny_encoders, "a", IDS, loader)
    assert calls == [IDS[:2], IDS[2:]] and cache.stats == {"hits": 2, "misses": 4}
    # other batch groupings: equal up to float reassociation in batched kernels
    assert torch.allclose(out, encode_clips(tiny_encoders, "a", loader(IDS)), atol=1e-5)


def test_other_backbone_preprocessing_or_dataset_misses(tmp_path, tiny_encoders, clips):
    _, loader, calls = clips
    cache = FeatureCache(tmp_path)
    base = {"segments": 3}
    key = cache.key(tiny_encoders, "v", "ave", base)
    assert cache.key(tiny_encoders, "v", "ave", dict(base)) == key
    other = load_encoders("tiny")  # same architecture and spec ...
    with torch.no_grad():  # ... other weights (e.g. a re-trained checkpoint under the same name)
        next(other.vision.parameters()).add_(0.01)
    assert other.spec == tiny_encoders.spec
    assert cache.key(other, "v", "ave", base) != key
    assert cache.key(tiny_encoders, "v", "ave", {"segments": 10}) != key
    assert cache.key(tiny_encoders, "v", "llp", base) != key
    assert cache.key(tiny_encoders, "a", "ave", base) != cache.key(tiny_encoders, "v", "ave", base)
    stretch = load_encoders("tiny", short_audio="stretch")
    stretch.load_state_dict(tiny_encoders.state_dict())  # identical weights, other audio transform
    assert cache.key(stretch, "a", "ave", base) != cache.key(tiny_encoders, "a", "ave", base)
    cache.get_or_compute(tiny_encoders, "v", IDS, loader, "ave", base)
    calls.clear()
    cache.get_or_compute(other, "v", IDS, loader, "ave", base)
    assert calls == [IDS]


def test_fingerprint_follows_in_place_weight_changes(tiny_encoders):
    torch.manual_seed(0)
    enc = load_encoders("tiny")
    before = weights_fingerprint(enc.vision)
    assert weights_fingerprint(enc.vision) == before
    with torch.no_grad():
        enc.vision.model.visual.proj.mul_(1.01)
    assert weights_fingerprint(enc.vision) != before


def test_loader_must_cover_the_ids(tmp_path, tiny_encoders, clips):
    _, loader, _ = clips
    with pytest.raises(ValueError, match="loader_fn returned 3 clips for 4"):
        FeatureCache(tmp_path).get_or_compute(tiny_encoders, "v", IDS, lambda ids: loader(ids[:3]))


def test_training_from_cached_features_matches_re_encoding(tmp_path, tiny_encoders, clips):
    data, loader, _ = clips
    feats = FeatureCache(tmp_path).get_or_compute(tiny_encoders, "v", IDS, loader)
    batch = next(loader(IDS, batch_size=4))
    cached = {"feat_v": feats, "segment_labels": batch["segment_labels"]}
    cls = discover()["clip-adapter"]
    runs = []
    for inputs in (batch, cached):
        torch.manual_seed(0)
        method = cls(tiny_encoders, TASK, cls.default_config())
        opt = torch.optim.SGD(method.trainable_parameters(), lr=0.5)
        for _ in range(2):  # two steps: the second one sees the updated adapter
            opt.zero_grad()
            method.loss(method(inputs), inputs).backward()
            opt.step()
        with torch.no_grad():
            runs.append(method.eval()(inputs))
    assert torch.allclose(runs[0], runs[1], atol=1e-5)


def test_workspace_keeps_each_set_after_its_first_lookup(tiny_env, monkeypatch):
    """Every epoch asks for the same train and validation sets: after the first time they come
    from memory, without a cache lookup (which fingerprints the tower and stacks the clips);
    another set, or the other modality, is looked up."""
    from avprompt.engine.workspace import Workspace
    ws = Workspace("synthav", "tiny", "cpu", "tiny")
    recs = ws.index("ave-cls").records[:6]
    first = ws.features("ave-cls", "v", recs)
    lookups = []
    real = ws._fc.get_or_compute
    monkeypatch.setattr(ws._fc, "get_or_compute", lambda *a, **k: lookups.append(a[1]) or real(*a, **k))
    assert ws.features("ave-cls", "v", recs) is first and lookups == []
    part = ws.features("ave-cls", "v", recs[:3])
    assert lookups == ["v"] and torch.equal(part, first[:3])
    audio = ws.features("ave-cls", "a", recs)
    assert lookups == ["v", "a"] and audio.shape[:2] == first.shape[:2]


def test_fingerprint_does_not_depend_on_the_thread_count():
    """A sweep's workers run 1 torch thread, its parent 2: both must find the same cached features.
    (Float64 sums of the shipped SynthAV vision tower's weights round differently with 1 and 2
    threads; the fingerprint hashed them and the workers re-encoded what the parent had cached.)"""
    from avprompt.engine import feature_cache as F
    vision = load_encoders("synthav", modalities="v").vision
    threads = torch.get_num_threads()
    prints = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            F._FINGERPRINTS.clear()
            prints.append(weights_fingerprint(vision))
    finally:
        torch.set_num_threads(threads)
    assert prints[0] == prints[1]
