"""Results store: templated paths, record contents, atomic writes under concurrency, resume."""
from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import subprocess
import sys

import pytest

from avprompt import results as R


def _key(**kw) -> R.CellKey:
    base = dict(suite="fewshot", task="ave", method="coop", backbones="ViT-B-32/openai+HTSAT",
                shots=4, seed=1)
    base.update(kw)
    return R.CellKey(**base)


def _ok(key: R.CellKey, primary: float = 0.5, **extra) -> dict:
    return R.build_result(key, "ok", {"primary": primary, "floor": 0.1}, {"lr": 0.002}, extra,
                          with_git=False)


def test_path_is_templated_and_sanitised(tmp_path):
    key = _key(modality="av", backbones="ViT-B-32/openai+HTSAT", suite="../x", data="AVE-1a2b", protocol="reference")
    path = R.result_path(tmp_path, key)
    rel = path.relative_to(tmp_path).parts
    # data and protocol are path components: other experiments live side by side
    assert rel == (".._x", "AVE-1a2b", "reference", "ave", "coop@av", "ViT-B-32_openai+HTSAT", "shots4", "seed1.json")
    assert R.sanitize("..") == "__" and R.sanitize("") == "_" and R.sanitize("a b") == "a_b"
    # a pinned modality makes a separate cell; no modality keeps the bare method key
    assert R.result_path(tmp_path, _key()).parts[-4] == "coop"


def test_bad_keys_and_records_are_rejected():
    with pytest.raises(ValueError, match="shots"):
        _key(shots=-1)
    with pytest.raises(ValueError, match="task"):
        _key(task=" ")
    with pytest.raises(ValueError, match="primary"):
        R.build_result(_key(), "ok", {"top1": 0.3}, {}, with_git=False)
    with pytest.raises(ValueError, match="primary"):
        R.build_result(_key(), "ok", {"primary": float("nan")}, {}, with_git=False)
    with pytest.raises(ValueError, match="status"):
        R.build_result(_key(), "done", {"primary": 0.3}, {}, with_git=False)


def test_record_is_self_describing(tmp_path):
    extra = dict(class_names=["dog", "cat"], prompt_templates=["a photo of a {}."],
                 split_hash="abc123", dataset="ave", backbone={"image": "ViT-B-32"},
                 timings={"train_s": 1.5, "eval_s": 0.5, "wall_s": 2.25}, peak_memory_mb=12.0,
                 device="cpu", selected_alpha=2.0)
    rec = _ok(_key(), 0.625, **extra)
    for field in ("status", "error", "metrics", "config", "class_names", "prompt_templates",
                  "split_hash", "dataset", "backbone", "versions", "git_commit", "timings",
                  "peak_memory_mb", "device", "created"):
        assert field in rec, field
    assert rec["extra"] == {"selected_alpha": 2.0}  # unknown extras are kept, not dropped
    assert rec["timings"] == {"train_s": 1.5, "eval_s": 0.5, "wall_s": 2.25}
    assert set(rec["versions"]) >= {"python", "torch", "open_clip", "laion_clap", "avprompt"}
    assert rec["versions"]["torch"]  # installed, read from metadata
    path = R.write_result(tmp_path, rec)
    back = R.read_result(path)
    assert back["metrics"]["primary"] == 0.625 and back["class_names"] == ["dog", "cat"]
    assert R.CellKey.from_dict(back["key"]) == _key()
    assert list(path.parent.glob(".*.tmp")) == []

    failed = R.build_result(_key(seed=2), "failed", {}, {}, error="CUDA out of memory",
                            with_git=False)
    assert failed["status"] == "failed" and failed["error"] == "CUDA out of memory"


def test_modules_import_no_torch():
    code = ("import sys, avprompt.results, avprompt.report, avprompt.cli_report; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit(tmp_path):
    assert R.git_commit(tmp_path) is None  # not a repository
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    assert R.git_commit(tmp_path) is None  # no commit yet
    (tmp_path / "f.txt").write_text("1")
    subprocess.run(git + ["add", "f.txt"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=tmp_path, check=True)
    head = R.git_commit(tmp_path)
    assert len(head) == 40 and int(head, 16) >= 0
    (tmp_path / "f.txt").write_text("2")
    assert R.git_commit(tmp_path) == head + "-dirty"


def test_load_results_skips_unreadable_files_naming_them(tmp_path):
    R.write_result(tmp_path, _ok(_key(seed=1)))
    R.write_result(tmp_path, _ok(_key(seed=2)))
    bad = R.result_path(tmp_path, _key(seed=3))
    bad.write_text('{"key": {"suite": "fewshot"')  # truncated
    foreign = tmp_path / "notes.json"
    foreign.write_text("[1, 2]")
    with pytest.warns(UserWarning) as caught:
        loaded = R.load_results(tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert str(bad) in messages and str(foreign) in messages
    assert sorted(r["key"]["seed"] for r in loaded) == [1, 2]
    assert all(r["_path"].endswith(".json") for r in loaded)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        R.load_results(tmp_path / "nope")


def test_cell_done_skips_ok_and_retries_failed(tmp_path):
    key = _key()
    assert not R.cell_done(tmp_path, key)
    R.write_result(tmp_path, R.build_result(key, "failed", error="boom", with_git=False))
    assert not R.cell_done(tmp_path, key)  # a failed cell is retried on rerun
    R.write_result(tmp_path, _ok(key, 0.7))  # the retry overwrites the failed file
    assert R.cell_done(tmp_path, key)
    assert R.read_result(R.result_path(tmp_path, key))["status"] == "ok"
    assert not R.cell_done(tmp_path, _key(seed=9))
    R.result_path(tmp_path, key).write_text("{not json")
    assert not R.cell_done(tmp_path, key)


def _writer(root: str, worker: int, rounds: int) -> None:
    shared = _key(seed=0)
    for i in range(rounds):
        # a large payload makes a torn write likely if writes were not atomic
        big = {"primary": 0.5, "per_class": {f"c{j}": j * 0.001 for j in range(400)}}
        rec = R.build_result(shared, "ok", big, {"worker": worker, "round": i}, with_git=False)
        R.write_result(root, rec)
        R.write_result(root, _ok(_key(seed=100 + worker), 0.1 * worker))


def test_concurrent_writers_never_corrupt(tmp_path):
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 5  # one shared cell + one per worker
    for f in files:
        json.loads(f.read_text())  # every file parses
    assert list(tmp_path.rglob("*.tmp")) == []
    shared = R.read_result(R.result_path(tmp_path, _key(seed=0)))
    assert shared["config"]["worker"] in range(4) and len(shared["metrics"]["per_class"]) == 400


def test_stored_predictions_keep_large_logits_exact():
    """float16 for ordinary logits; logits beyond its range (a Tip-Adapter-F cache at a large lr)
    stay float32 so that the bootstrap ranks what the record scored (no inf, no new ties)."""
    import numpy as np

    from avprompt.data.records import ClipRecord
    from avprompt.engine.cell import per_video_predictions
    from avprompt.task import TaskSpec
    task = TaskSpec("llp-cls", "video", ("a", "b"), num_segments=2)
    records = [ClipRecord(f"c{i}", f"v{i}", "", "test", [0, 0], [0]) for i in range(3)]
    small = per_video_predictions(task, np.full((3, 2, 2), 3.0), records)["logits"]
    assert small.dtype == np.float16
    big = np.array([[[1e15, 1.0]] * 2, [[2e15, 1.0]] * 2, [[7e4, 1.0]] * 2])
    kept = per_video_predictions(task, big, records)["logits"]
    assert kept.dtype == np.float32 and np.isfinite(kept).all()
    assert list(np.argsort(kept[:, 0])) == [2, 0, 1]


def test_atomic_writes_get_the_modes_a_plain_write_would(tmp_path):
    """A temporary file is 0600; the written file gets 0666 minus the umask (a results store others
    can read), and a replaced file keeps its own mode."""
    import os
    import stat

    from avprompt.atomic import atomic_write_text
    old = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        new.chmod(0o640)
        atomic_write_text(new, "{} ")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_text() == "{} "
    finally:
        os.umask(old)
