"""Sweep configuration: defaults -> suite file -> CLI, per-method overrides, cell planning."""
from __future__ import annotations

from pathlib import Path

import pytest

from avprompt.bench import BenchConfig, plan_cells

SUITES = Path(__file__).resolve().parent.parent / "benchmarks" / "suites"


def test_file_overrides_defaults_and_cli_overrides_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('shots = [1, 4]\nseeds = [1, 2]\nmethods = "coop"\n[overrides.coop]\nn_ctx = 4\n')
    cfg = BenchConfig.from_sources(str(f), seeds=[7])
    assert cfg.shots == [1, 4] and cfg.seeds == [7] and cfg.overrides == {"coop": {"n_ctx": 4}}
    cells = plan_cells(cfg)
    assert {c.shots for c in cells} == {1, 4} and all(c.overrides == {"n_ctx": 4} for c in cells)


def test_unknown_keys_are_errors_naming_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("shotz: [1]\n")
    with pytest.raises(ValueError, match="bad.yaml: unknown option 'shotz'"):
        BenchConfig.from_sources(str(f))


def test_shipped_suites_parse_and_plan():
    for path in SUITES.glob("*.toml"):
        cfg = BenchConfig.from_sources(str(path))
        assert plan_cells(cfg), path


def test_zero_shot_methods_run_once_per_task_and_modality_rules():
    cfg = BenchConfig(shots=[1, 2], seeds=[1, 2], tasks=["ave"], methods="zeroshot-clip,dg-sct,coop")
    cells = plan_cells(cfg)
    zs = [c for c in cells if c.method == "zeroshot-clip"]
    assert [(c.shots, c.seed) for c in zs] == [(0, 1)]
    assert {c.modality for c in cells if c.method == "coop"} == {"v", "a", "av"}  # cached: every branch
    assert {c.modality for c in cells if c.method == "dg-sct"} == {"av"}
    assert len([c for c in cells if c.method == "dg-sct"]) == 4
    assert cells[-1].method == "dg-sct"  # in-network cells run after the cheap ones
