"""SynthAV AVS-format sets (S4, MS3): layout, exact masks, determinism, resumability."""
from __future__ import annotations

import csv
import hashlib
import json
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avprompt.synthav import avs_set
from avprompt.synthav.avs_set import CATEGORIES, COUNTS, generate_avs, object_subsamples
from avprompt.synthav.render import Background, ObjectLook, render_frame

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("avs")
    generate_avs(out, "s4", "tiny", seed=0)
    generate_avs(out, "ms3", "tiny", seed=0)
    return out


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _truth(root: Path) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads((root / avs_set.TRUTH_FILE).read_text())["videos"]}


def _png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.array(im)


def _cos(pixels: np.ndarray, rgb: list[float]) -> np.ndarray:
    p = pixels.astype(np.float64)
    c = np.asarray(rgb, np.float64)
    return p @ c / (np.linalg.norm(p, axis=-1) * np.linalg.norm(c) + 1e-9)


def test_s4_layout_and_metadata(tiny: Path) -> None:
    root = tiny / "Single-source"
    header, rows = _rows(root / "s4_meta_data.csv")
    assert header == ["name", "start", "category", "split"]
    assert {r[3] for r in rows} == set(SPLITS)
    assert [sum(r[3] == s for r in rows) for s in SPLITS] == list(COUNTS["s4"]["tiny"])
    data = root / "s4_data"
    for name, start, cat, split in rows:
        assert cat in CATEGORIES and 0 <= int(start) <= 5
        frames = data / "visual_frames" / split / cat / name
        assert sorted(p.name for p in frames.iterdir()) == [f"{name}_{k}.png" for k in range(1, 6)]
        masks = data / "gt_masks" / split / cat / name
        want = [1] if split == "train" else [1, 2, 3, 4, 5]
        assert sorted(p.name for p in masks.iterdir()) == [f"{name}_{k}.png" for k in want]
        assert (data / "audio_wav" / split / cat / f"{name}.wav").is_file()
        mode, img = _png(frames / f"{name}_1.png")
        assert mode == "RGB" and img.shape == (224, 224, 3)
    assert not list(tiny.rglob("*.part"))
    assert not (root / avs_set.PARTIAL_FILE).exists()


def test_ms3_layout_and_metadata(tiny: Path) -> None:
    root = tiny / "Multi-sources"
    header, rows = _rows(root / "ms3_meta_data.csv")
    assert header == ["video_id", "split"]
    assert [sum(r[1] == s for r in rows) for s in SPLITS] == list(COUNTS["ms3"]["tiny"])
    data = root / "ms3_data"
    # no split folder under visual_frames: its children are the video ids themselves
    assert sorted(p.name for p in (data / "visual_frames").iterdir()) == sorted(r[0] for r in rows)
    for vid, split in rows:
        assert sorted(p.name for p in (data / "visual_frames" / vid).iterdir()) == [
            f"{vid}.mp4_{k}.png" for k in range(1, 6)]
        assert sorted(p.name for p in (data / "gt_masks" / split / vid).iterdir()) == [
            f"{vid}_{k}.png" for k in range(1, 6)]
        assert (data / "audio_wav" / split / f"{vid}.wav").is_file()


def test_wav_is_5s_16k_mono_pcm16(tiny: Path) -> None:
    wavs = sorted(tiny.rglob("*.wav"))
    assert len(wavs) == sum(COUNTS["s4"]["tiny"]) + sum(COUNTS["ms3"]["tiny"])
    for p in wavs:
        with wave.open(str(p)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
                1, 2, 16000, 80000)
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert np.abs(pcm).max() > 1000  # a sound, not silence or noise only


def _masks(tiny: Path, subset: str):
    """(truth of the video, k, mask bool array, frame array) for every GT mask of a subset."""
    root = tiny / avs_set.SUBSET_DIRS[subset]
    data = root / f"{subset}_data"
    for name, v in _truth(root).items():
        for mpath in sorted((data / "gt_masks").rglob(f"{name}/{name}_*.png")):
            k = int(mpath.stem.rsplit("_", 1)[1])
            fpath = (data / "visual_frames" / v["split"] / v["category"] / name / f"{name}_{k}.png"
                     if subset == "s4" else data / "visual_frames" / name / f"{name}.mp4_{k}.png")
            mode, m = _png(mpath)
            assert mode == "L" and set(np.unique(m)) <= {0, 255}
            yield v, k, m == 255, _png(fpath)[1]


def test_s4_masks_binary_nonempty_and_coloured_as_the_sounding_object(tiny: Path) -> None:
    n = 0
    for v, k, m, frame in _masks(tiny, "s4"):
        n += 1
        sounding = [o for o in v["objects"] if o["audible"] == "11111"]
        assert len(sounding) == 1 and sounding[0]["class"] == v["category"]
        assert all(o["audible"] == "00000" for o in v["objects"] if o is not sounding[0])
        assert m.mean() > 0.02  # non-empty and a sizeable object
        cos = _cos(frame[m], sounding[0]["rgb"])
        assert (cos > 0.97).mean() > 0.9  # mask pixels show the sounding object's colour
        if sum(o["colour"] == sounding[0]["colour"] for o in v["objects"]) == 1:
            # and the object is not missed: outside the mask its colour is (almost) absent
            assert (_cos(frame[~m], sounding[0]["rgb"]) > 0.99).mean() < 0.01
    assert n == sum(c if s == "train" else 5 * c for s, c in zip(SPLITS, COUNTS["s4"]["tiny"]))


def test_ms3_masks_follow_the_sounding_objects_per_second(tiny: Path) -> None:
    empty = {s: 0 for s in SPLITS}
    for v, k, m, frame in _masks(tiny, "ms3"):
        assert 2 <= len(v["objects"]) <= 3
        assert 1 <= sum("1" in o["audible"] for o in v["objects"]) <= len(v["objects"])
        live = [o for o in v["objects"] if o["audible"][k - 1] == "1"]
        if not live:
            assert not m.any()
            empty[v["split"]] += 1
            continue
        assert m.any()
        best = np.max([_cos(frame[m], o["rgb"]) for o in live], axis=0)
        assert (best > 0.97).mean() > 0.9
    # by construction every split has a frame where nothing sounds (the empty-GT metric rule)
    assert all(empty.values()), empty


def test_mask_geometry_is_the_renderers(tiny: Path) -> None:
    """object_subsamples marks exactly the supersampled points render_frame paints."""
    flat = Background((100.0, 100.0, 100.0), (0.0, 0.0), 0, 0.0)
    base = render_frame([], flat, 224)
    rng = np.random.default_rng(0)
    for shape in ("circle", "square", "triangle", "star", "ring", "cross"):
        look = ObjectLook(shape, (220.0, 40.0, 40.0), float(rng.uniform(0.2, 0.8)),
                          float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.1, 0.4)),
                          angle=float(rng.uniform(0, 6.3)))
        painted = (render_frame([look], flat, 224) != base).any(axis=-1)
        cover = object_subsamples(look, 224).reshape(224, 2, 224, 2).sum(axis=(1, 3))
        assert np.array_equal(painted, cover > 0), shape


def test_meta_facts_match_the_masks(tiny: Path) -> None:
    for subset in ("s4", "ms3"):
        meta = json.loads((tiny / avs_set.SUBSET_DIRS[subset] / avs_set.META_FILE).read_text())
        masks = [m for _, _, m, _ in _masks(tiny, subset)]
        facts = meta["facts"]["all"]
        assert meta["counts"] == dict(zip(SPLITS, COUNTS[subset]["tiny"]))
        assert facts["gt_frames"] == len(masks)
        assert facts["empty_gt_fraction"] == pytest.approx(np.mean([not m.any() for m in masks]),
                                                           abs=1e-4)
        assert facts["mean_foreground_fraction"] == pytest.approx(
            np.mean([m.mean() for m in masks]), abs=1e-4)
        assert 0 <= facts["miou"]["all_visible_objects"] < 1


def test_deterministic_and_idempotent(tiny: Path, tmp_path: Path) -> None:
    for subset in ("s4", "ms3"):
        generate_avs(tmp_path / "a", subset, "tiny", seed=0)
        assert generate_avs(tmp_path / "b", subset, "tiny", seed=0) == tmp_path / "b"
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b") == _tree_hash(tiny)
    marker = tmp_path / "a" / "Single-source" / avs_set.META_FILE
    before = marker.stat().st_mtime_ns
    generate_avs(tmp_path / "a", "s4", "tiny", seed=0)  # complete: returns without writing
    assert marker.stat().st_mtime_ns == before
    generate_avs(tmp_path / "c", "s4", "tiny", seed=1)
    assert _tree_hash(tmp_path / "c") != _tree_hash(tmp_path / "a" / "Single-source")


def test_interrupted_run_resumes_to_the_same_bytes(tiny: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = avs_set._save_png, []

    def flaky(path: Path, array: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 17:  # killed mid-write: a half file under the temporary name
            path.with_name(path.name + ".part").write_bytes(b"\x89PNG half")
            raise RuntimeError("interrupted")
        real(path, array)
    monkeypatch.setattr(avs_set, "_save_png", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_avs(tmp_path, "s4", "tiny", seed=0)
    root = tmp_path / "Single-source"
    assert (root / avs_set.PARTIAL_FILE).exists() and not (root / avs_set.META_FILE).exists()
    monkeypatch.setattr(avs_set, "_save_png", real)
    generate_avs(tmp_path, "s4", "tiny", seed=0)
    assert _tree_hash(root) == _tree_hash(tiny / "Single-source")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="subset"):
        generate_avs(tmp_path, "s5", "tiny")
    with pytest.raises(ValueError, match="size"):
        generate_avs(tmp_path, "s4", "huge")


def _generate_in_child(kind: str, out: str, ready) -> None:
    from avprompt.synthav.avqa_set import generate_avqa
    from avprompt.synthav.world import generate_world
    ready.set()  # imports done: the generator starts now
    if kind == "avs":
        generate_avs(out, "ms3", "tiny", seed=0)
    elif kind == "avqa":
        generate_avqa(out, "tiny", seed=0)
    else:
        generate_world(out, "tiny", seed=0, workers=1)


@pytest.mark.parametrize("kind", ["avs", "avqa", "world"])
def test_first_use_generation_waits_for_another_process(kind: str, tiny: Path, tmp_path: Path) -> None:
    """Two processes on an empty cache (two `avprompt train` at once) used to both generate into the
    same folder, one dying on the other's temporary files; the second now waits, then finds it done."""
    import multiprocessing as mp
    import time

    from avprompt.atomic import exclusive
    out = tmp_path / "set"
    locked = out / "Multi-sources" if kind == "avs" else out
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_generate_in_child, args=(kind, str(out), ready))
    with exclusive(locked):  # this process is "the first one", mid-generation
        child.start()
        assert ready.wait(60)
        time.sleep(1.5)  # unlocked, the generator writes its first folders within milliseconds
        assert child.is_alive() and not locked.exists(), "the second process did not wait"
        if kind != "avs":  # the other generators take longer: waiting is what is tested
            child.terminate()
    child.join(120)
    if kind == "avs":
        assert child.exitcode == 0
        assert _tree_hash(locked) == _tree_hash(tiny / "Multi-sources")
