"""Sweep configuration: defaults -> suite file -> CLI, per-method overrides, cell planning."""
from __future__ import annotations

from pathlib import Path

import pytest

from avprompt.bench import BenchConfig, plan_cells, plan_sweep

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


def test_shipped_suites_plan_exactly_their_methods():
    """Each shipped suite plans the exact (method, modality) set it is for, and every per-method
    override table is used by a planned cell (an override no cell uses is a silent no-op)."""
    from avprompt.registry import discover
    every = set(discover())
    expected = {
        "fewshot-full.toml": None,  # all registered methods
        "reference-protocol.toml": {("dg-sct", "av"), ("maple", "v"), ("coop", "v"), ("coop", "a"), ("coop", "av"),
                                    ("zeroshot-clip", "v"), ("zeroshot-clap", "a"), ("zeroshot-av", "av")},
    }
    assert {p.name for p in SUITES.glob("*.toml")} == set(expected)
    for path in SUITES.glob("*.toml"):
        cfg = BenchConfig.from_sources(str(path))
        cells, skipped = plan_sweep(cfg)
        planned = {(c.method, c.modality) for c in cells}
        if expected[path.name] is None:
            assert {m for m, _ in planned} == every and not skipped, path
        else:
            assert planned == expected[path.name], path
        for key, opts in cfg.overrides.items():
            assert any(c.method == key and all(c.overrides.get(k) == v for k, v in opts.items()) for c in cells), key


def test_a_named_method_without_a_cell_is_an_error_naming_why():
    with pytest.raises(ValueError, match="dg-sct runs on av only; --modality v excludes it"):
        plan_sweep(BenchConfig(methods="dg-sct,coop", modality="v"))
    with pytest.raises(ValueError, match="dg-sct runs on av only"):
        plan_sweep(BenchConfig(methods="coop,dg-*", modality="v", overrides={"dg-sct": {"lr": 1.0}}))
    # by glob, the method is skipped with its reason instead
    cells, skipped = plan_sweep(BenchConfig(methods="dg-*,coop", modality="v"))
    assert {c.method for c in cells} == {"coop"} and skipped == [
        ("dg-sct", "dg-sct runs on av only; --modality v excludes it")]
    with pytest.raises(ValueError, match="overrides for maple: not among the sweep's methods"):
        plan_sweep(BenchConfig(methods="coop", overrides={"maple": {"depth": 2}}))


@pytest.mark.parametrize("field,value,needle", [
    ("shots", [-1, 2], "--shots -1,2: shots must be positive"),
    ("shots", [0], "shots must be positive"),
    ("max_epochs", -3, "--max-epochs -3"),
    ("max_epochs_in_network", -1, "--max-epochs-in-network -1"),
    ("seeds", [], "--seeds is empty"),
    ("modality", "x", "--modality 'x'"),
    ("device", "tpu", "--device 'tpu'"),
])
def test_bad_sweep_values_are_named(field, value, needle):
    import dataclasses
    with pytest.raises(ValueError, match=needle.replace("'", ".").replace("-1,2", "-1,2")):
        dataclasses.replace(BenchConfig(), **{field: value}).validate()


def test_zero_shot_methods_run_once_per_task_and_modality_rules():
    cfg = BenchConfig(shots=[1, 2], seeds=[1, 2], tasks=["ave"], methods="zeroshot-clip,dg-sct,coop")
    cells = plan_cells(cfg)
    zs = [c for c in cells if c.method == "zeroshot-clip"]
    assert [(c.shots, c.seed) for c in zs] == [(0, 1)]
    assert {c.modality for c in cells if c.method == "coop"} == {"v", "a", "av"}  # cached: every branch
    assert {c.modality for c in cells if c.method == "dg-sct"} == {"av"}
    # in-network methods run on seeds_in_network (default: seed 1), cached ones on every seed
    assert sorted((c.shots, c.seed) for c in cells if c.method == "dg-sct") == [(1, 1), (2, 1)]
    assert {c.seed for c in cells if c.method == "coop"} == {1, 2}
    assert cells[-1].method == "dg-sct"  # in-network cells run after the cheap ones
    import dataclasses
    every = plan_cells(dataclasses.replace(cfg, seeds_in_network=None))
    assert len([c for c in every if c.method == "dg-sct"]) == 4
    # on the embedded world CoCoOp (cached features, in-network cost) gets the reduced seeds too
    cocoop = plan_cells(dataclasses.replace(cfg, methods="cocoop"))
    assert {c.seed for c in cocoop} == {1}
    assert {c.seed for c in plan_cells(dataclasses.replace(cfg, methods="cocoop", data="/x"))} == {1, 2}
