"""Bad sweep inputs: each is one line on stderr and exit code 2, before any cell runs."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avprompt import results as R


def _bench(*args, cwd=None):
    env = {**os.environ, "AVPROMPT_SYNTH_SIZE": "tiny", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "avprompt.cli", "bench", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


def _one_line(p, needle):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--shots", "-1,2"], "--shots -1,2: shots must be positive integers (got -1)"),
    (["--max-epochs", "-3"], "--max-epochs -3: must be 0 (no cap) or positive"),
    (["--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    (["--methods", "dg-sct", "--modality", "v"], "dg-sct runs on av only; --modality v excludes it"),
])
def test_bad_options(tmp_path, args, needle):
    if "cuda" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is visible here")
    _one_line(_bench(*args, "--out", str(tmp_path / "o")), needle)


@pytest.fixture
def world(tiny_world, tmp_path):
    return Path(shutil.copytree(tiny_world, tmp_path / "data"))


def _sweep(world, tmp_path):
    return _bench("--data", str(world), "--backbones", "tiny", "--tasks", "ave-cls", "--methods",
                  "zeroshot-clip,linear-probe", "--modality", "v", "--shots", "1", "--out", str(tmp_path / "o"))


def test_empty_test_split_is_named(world, tmp_path):
    (world / "ave" / "testSet.txt").write_text("")
    _one_line(_sweep(world, tmp_path), "task ave-cls (standard protocol, seed 1): no test clip to score: "
                                       "the test split is empty")
    assert not list((tmp_path / "o").rglob("seed*.json"))


def test_empty_train_split_is_named(world, tmp_path):
    (world / "ave" / "trainSet.txt").write_text("")
    _one_line(_sweep(world, tmp_path), "no training clip for linear-probe at K=1: the train split has no eligible clip")


def test_every_test_clip_bad_is_named(world, tmp_path):
    for row in (world / "ave" / "testSet.txt").read_text().splitlines():
        (world / "ave" / "AVE" / f"{row.split('&')[1]}.mp4").write_bytes(b"not a video")
    line = _one_line(_sweep(world, tmp_path), "no test clip to score: all")
    assert "test clips have bad media" in line


def test_a_record_never_holds_nan(tmp_path):
    key = R.CellKey("fewshot", "ave", "coop", "bb", 1, 1)
    rec = R.build_result(key, "ok", {"primary": 50.0, "val_best": float("nan"), "floors": {"x": float("inf")}})
    path = R.write_result(tmp_path, rec)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back["metrics"]["val_best"] is None and back["metrics"]["floors"]["x"] is None
    assert set(back["nulls"]) == {"metrics.val_best", "metrics.floors.x"}
    assert all("not a finite number" in why for why in back["nulls"].values())
    assert math.isfinite(back["metrics"]["primary"])
