"""A finished cell is reused only when it is the same experiment; claims; a store that cannot be
written. Runs fast methods (zero-shot, linear probe) on a copy of the tiny SynthAV world."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avprompt import cell_claims as C
from avprompt import results as R
from avprompt.bench import BenchConfig, run_bench


@pytest.fixture
def world(tiny_world, tmp_path):
    """A private copy of the tiny world (its annotation files may be edited)."""
    return Path(shutil.copytree(tiny_world, tmp_path / "data"))


def _cfg(world, out, **kw) -> BenchConfig:
    base = dict(data=str(world), backbones="tiny", tasks=["ave-cls"], methods="zeroshot-clip,linear-probe",
                modality="v", shots=[1], seeds=[1], out=str(out), synth_size="tiny")
    return BenchConfig(**{**base, **kw})


def _states(cfg) -> dict:
    plan = run_bench(dataclasses.replace(cfg, dry_run=True), echo=lambda *_: None)
    return {(p.method, p.shots): (state, detail) for p, state, detail in plan["states"]}


def _mtimes(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in Path(out).rglob("seed*.json")}


def test_unchanged_rerun_recomputes_nothing_and_rerun_forces(world, tmp_path):
    cfg = _cfg(world, tmp_path / "o")
    assert run_bench(cfg, echo=lambda *_: None)["ran"] == 2
    before = _mtimes(cfg.out)
    assert set(_states(cfg).values()) == {("done", "")}
    assert run_bench(cfg, echo=lambda *_: None)["ran"] == 0
    assert _mtimes(cfg.out) == before
    assert {s for s, _ in _states(dataclasses.replace(cfg, rerun=True)).values()} == {"rerun"}
    assert run_bench(dataclasses.replace(cfg, rerun=True), echo=lambda *_: None)["ran"] == 2


def test_config_change_is_stale_naming_the_field_and_reruns(world, tmp_path):
    cfg = _cfg(world, tmp_path / "o")
    run_bench(cfg, echo=lambda *_: None)
    changed = dataclasses.replace(cfg, overrides={"linear-probe": {"max_iter": 7}})
    states = _states(changed)
    assert states[("linear-probe", 1)][0] == "stale" and "config.max_iter" in states[("linear-probe", 1)][1]
    assert states[("zeroshot-clip", 0)] == ("done", "")
    lines = []
    assert run_bench(changed, echo=lines.append)["ran"] == 1
    assert any(line.startswith("rerun ave-cls linear-probe@v K=1") and "config.max_iter" in line for line in lines)
    rec = R.read_result(next(Path(cfg.out).rglob("linear-probe@v/**/seed1.json")))
    assert rec["identity"]["config"]["max_iter"] == 7 and rec["config"]["max_iter"] == 7


def test_edited_annotations_are_another_experiment(world, tmp_path):
    cfg = _cfg(world, tmp_path / "o")
    run_bench(cfg, echo=lambda *_: None)
    ann = world / "ave" / "testSet.txt"  # the split files are what the AVE reader reads labels from
    rows = ann.read_text().splitlines()
    # shift one test clip's event by a second: same files, other labels
    row = rows[0].split("&")
    row[3] = str(int(row[3]) + 1 if int(row[3]) < int(row[4]) - 1 else int(row[3]) - 1)
    ann.write_text("\n".join(["&".join(row), *rows[1:]]) + "\n")
    import avprompt.bench
    avprompt.bench._WORKSPACE = None  # a new command: one process reads the annotations once
    states = _states(cfg)
    assert all(s == "stale" and "data.annotations" in d for s, d in states.values()), states


def test_the_same_data_in_another_folder_has_the_same_annotations_fingerprint(world, tmp_path):
    """Media paths enter the fingerprint relative to the data folder: a SynthAV world generated in
    another cache directory (or a dataset copied elsewhere) is the same annotation content."""
    from avprompt.bench import _workspace
    copy = Path(shutil.copytree(world, tmp_path / "elsewhere" / "data"))
    ids = [_workspace(_cfg(w, tmp_path / "o")).data_identity("ave-cls") for w in (world, copy)]
    assert ids[0]["annotations"] == ids[1]["annotations"]
    assert ids[0]["location"] != ids[1]["location"]  # a real folder still names where it is


def test_rebuilt_weights_are_another_experiment(world, tmp_path):
    import torch

    from avprompt.encoders import load_encoders
    weights = tmp_path / "clip.pt"
    torch.save(load_encoders("tiny").vision.model.state_dict(), weights)
    cfg = _cfg(world, tmp_path / "o", backbones=f"clip=avp-vit-tiny@{weights},clap=avp-htsat-tiny",
               methods="zeroshot-clip")
    assert run_bench(cfg, echo=lambda *_: None)["ran"] == 1
    state = torch.load(weights)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 0.01
    torch.save(state, weights)
    (state_, detail), = _states(cfg).values()
    assert state_ == "stale" and "backbones.weights.clip" in detail


def test_protocol_and_data_live_side_by_side(world, tmp_path):
    cfg = _cfg(world, tmp_path / "o")
    run_bench(cfg, echo=lambda *_: None)
    ref = dataclasses.replace(cfg, protocol="reference")
    assert {s for s, _ in _states(ref).values()} == {"new"}
    run_bench(ref, echo=lambda *_: None)
    other = Path(shutil.copytree(world, tmp_path / "data2"))
    assert {s for s, _ in _states(dataclasses.replace(cfg, data=str(other))).values()} == {"new"}
    protocols = {R.read_result(p)["key"]["protocol"] for p in Path(cfg.out).rglob("seed*.json")}
    assert protocols == {"standard", "reference"}
    assert len(list(Path(cfg.out).rglob("seed*.json"))) == 4


@pytest.mark.parametrize("field,new", [
    ("suite", "other"), ("task", "ave"), ("method", "clip-adapter"), ("modality", "a"), ("shots", 2), ("seed", 2),
    ("protocol", "reference"), ("data.location", "dir:/elsewhere"), ("data.annotations", "0" * 16),
    ("backbones.weights.clip", "sha256:" + "1" * 16), ("config.lr", 0.5),
])
def test_every_identity_field_makes_a_cell_stale(tmp_path, field, new):
    key = R.CellKey("fewshot", "ave-cls", "coop", "tiny", 1, 1, "v")
    identity = {"suite": "fewshot", "task": "ave-cls", "method": "coop", "modality": "v", "shots": 1, "seed": 1,
                "protocol": "standard", "data": {"location": "synthav-tiny-0", "annotations": "a" * 16},
                "backbones": {"name": "tiny", "weights": {"clip": "random-init:seed0"}},
                "config": {"lr": 0.002}, "config_hash": R.identity_hash({"lr": 0.002})}
    R.write_result(tmp_path, R.build_result(key, "ok", {"primary": 50.0}, {}, {"identity": identity}))
    assert R.cell_state(tmp_path, key, identity) == ("done", "")
    other = __import__("copy").deepcopy(identity)
    node, *path = field.split(".")
    target = other
    for part in [node, *path][:-1]:
        target = target[part]
    target[[node, *path][-1]] = new
    state, detail = R.cell_state(tmp_path, key, other)
    assert state == "stale" and detail.startswith(field + ":"), detail


def test_store_that_fills_up_keeps_finished_cells(world, tmp_path, monkeypatch):
    """The third cell's write fails with ENOSPC (each cell fsyncs its predictions, then its record):
    one-line error, earlier records intact, no temp or claim files left, and a rerun resumes."""
    import errno
    cfg = _cfg(world, tmp_path / "o", shots=[1, 2, 4])
    real, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(R.os, "fsync", fsync)
    with pytest.raises(ValueError, match=r"No space left on device; the 2 cells finished before it are kept"):
        run_bench(cfg, echo=lambda *_: None)
    monkeypatch.setattr(R.os, "fsync", real)
    assert len(list(Path(cfg.out).rglob("seed*.json"))) == 2
    assert not [p for p in Path(cfg.out).rglob("*") if p.suffix in (".tmp", ".claim")]
    assert run_bench(cfg, echo=lambda *_: None)["ran"] == 2


def test_unwritable_out_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    p = subprocess.run([sys.executable, "-m", "avprompt.cli", "bench", "--out", str(blocker / "sub"), "--shots", "1"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--out" in p.stderr and "not writable" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_two_concurrent_sweeps_compute_each_cell_once(world, tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "avprompt.cli", "bench", "--data", str(world), "--backbones", "tiny",
           "--tasks", "ave-cls", "--methods", "zeroshot-clip,linear-probe", "--modality", "v",
           "--shots", "1,2,4,8", "--seeds", "1", "--out", str(out)]
    env = {**os.environ, "AVPROMPT_SYNTH_SIZE": "tiny", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    import re
    ran = [int(re.search(r"^(\d+) cells run in", o, re.M).group(1)) for o, _ in outs]
    assert sum(ran) == 5, outs
    assert len(list(out.rglob("seed*.json"))) == 5
    assert not list(out.rglob("*.claim"))


def test_a_dead_owners_claim_is_taken_over(tmp_path):
    key = R.CellKey("fewshot", "ave", "coop", "bb", 1, 1)
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(p.stdout)
    path = C.claim_path(tmp_path, key)
    path.parent.mkdir(parents=True)
    import json
    import platform
    import time
    path.write_text(json.dumps({"pid": dead, "host": platform.node(), "time": time.time()}))
    (path.parent / ".seed1.abc.tmp").write_text("half a record")
    assert C.claim_cell(tmp_path, key) is None  # taken over
    assert not (path.parent / ".seed1.abc.tmp").exists()
    assert C.claim_owner(tmp_path, key)["pid"] == os.getpid()  # a live claim blocks others
    C.release_cell(tmp_path, key)
    assert not path.exists()
