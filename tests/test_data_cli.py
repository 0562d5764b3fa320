"""`avprompt data prepare` / `export-manifest` through the CLI on real mp4 files, and a sweep on
the exported manifest (the user's own data, no code)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from avprompt.cli import app


def test_prepare_then_export_manifest_and_reload(tiny_world, tmp_path):
    r = CliRunner().invoke(app, ["data", "prepare", "--dataset", "ave", "--root", str(tiny_world / "ave"),
                                 "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    frames = list((tmp_path / "cache").rglob("frames/*.npy"))
    assert frames, "prepare wrote no arrays"
    man = tmp_path / "mine.jsonl"
    r = CliRunner().invoke(app, ["data", "export-manifest", "--dataset", "ave", "--root", str(tiny_world / "ave"),
                                 "--out", str(man)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in man.read_text().splitlines() if line.strip()]
    rows = [x for x in lines if "split" in x]  # a leading line may carry the class list
    assert rows and len(rows) >= len(lines) - 1
    r = CliRunner().invoke(app, ["data", "stats", "--dataset", f"manifest:{man}", "--root", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rows"] == len(rows)


def test_prepare_on_missing_root_is_one_line_error(tmp_path):
    r = CliRunner().invoke(app, ["data", "prepare", "--dataset", "ave", "--root", str(tmp_path / "none")])
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_sweep_on_a_manifest_of_own_videos(tiny_world, tmp_path, monkeypatch):
    man = tmp_path / "own.csv"
    r = CliRunner().invoke(app, ["data", "export-manifest", "--dataset", "ave", "--root", str(tiny_world / "ave"),
                                 "--out", str(man)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["bench", "--data", f"manifest:{man}", "--backbones", "tiny", "--tasks", "ave,ave-cls",
                                 "--methods", "zeroshot-clip,linear-probe", "--modality", "v", "--shots", "1",
                                 "--seeds", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(p.read_text()) for p in out.rglob("seed*.json")]
    assert len(recs) == 4 and all(x["status"] == "ok" for x in recs)
    assert all(x["dataset"].startswith("manifest:") for x in recs)
