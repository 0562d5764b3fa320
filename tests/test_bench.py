"""The harness end to end on the tiny SynthAV world with tiny backbones: CLI sweep, resume after
SIGKILL, failed-cell isolation, Ray executor, DDP with gloo."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avprompt.cli import app

TINY = ["--data", "synthav", "--backbones", "tiny", "--tasks", "ave-cls", "--seeds", "1"]


def _bench_env(tiny_world):
    return {**os.environ, "AVPROMPT_SYNTH_SIZE": "tiny", "OMP_NUM_THREADS": "1"}


def test_cli_sweep_writes_json_table_and_png(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["bench", "--shots", "1", "--methods", "zeroshot-clip,clip-adapter,linear-probe",
                                 "--modality", "v", "--max-epochs", "2", "--out", str(out), *TINY])
    assert r.exit_code == 0, r.output
    files = sorted(out.rglob("seed*.json"))
    assert len(files) == 3
    rec = json.loads(files[0].read_text())
    for field in ("metrics", "config", "class_names", "prompt_templates", "split_hash", "versions", "timings",
                  "dataset", "backbone"):
        assert rec[field], field
    sweep = out / "fewshot" / "synthav-tiny-0" / "standard"  # <out>/<suite>/<data>/<protocol>
    assert (sweep / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((sweep / "sweep.json").read_text())["cells_run"] == 3
    assert "| ave-cls" in r.output and "curves:" in r.output
    # stderr is no terminal here: plain progress lines, a final count, no carriage returns
    assert "cells: 3/3 cell in" in r.output and "\r" not in r.output
    # a rerun with nothing to do decides from the files and the backbone spec: no tower is built
    import avprompt.bench
    monkeypatch.setattr(avprompt.bench, "_WORKSPACE", None)
    monkeypatch.setattr("avprompt.encoders.load_encoders", lambda *a, **k: pytest.fail("towers built"))
    again = CliRunner().invoke(app, ["bench", "--shots", "1", "--methods", "zeroshot-clip,clip-adapter,linear-probe",
                                     "--modality", "v", "--max-epochs", "2", "--out", str(out), *TINY])
    assert again.exit_code == 0, again.output
    assert "(3 already done, 0 to run)" in again.output and "0 cells run" in again.output
    # the report command rebuilds the same table from the files alone
    rep = CliRunner().invoke(app, ["report", str(out / "fewshot"), "--format", "csv"])
    assert rep.exit_code == 0 and "clip-adapter@v" in rep.output


def test_bad_options_are_one_line_errors(tmp_path):
    for args, needle in ((["bench", "--shots", "one"], "--shots"), (["bench", "--protocol", "x"], "--protocol"),
                         (["bench", "--data", str(tmp_path / "nope")], "no such folder")):
        p = subprocess.run([sys.executable, "-m", "avprompt.cli", *args, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, env={**os.environ, "AVPROMPT_SYNTH_SIZE": "tiny"})
        assert p.returncode == 2, p.stderr
        assert needle in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_resume_after_sigkill_recomputes_only_missing_cells(tiny_world, tmp_path):
    out = tmp_path / "res"
    # MaPLe runs in-network (seconds per cell), so the kill lands between cells
    cmd = [sys.executable, "-m", "avprompt.cli", "bench", "--shots", "1,2,4", "--methods", "maple",
           "--modality", "v", "--max-epochs-in-network", "3", "--out", str(out), *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_bench_env(tiny_world))
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.rglob("seed*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in out.rglob("seed*.json")}
    assert 1 <= len(first) < 3, "kill the sweep after its first cell"
    done = subprocess.run(cmd, capture_output=True, text=True, env=_bench_env(tiny_world))
    assert done.returncode == 0, done.stderr[-2000:]
    after = {p: p.stat().st_mtime_ns for p in out.rglob("seed*.json")}
    assert len(after) == 3
    assert all(after[p] == t for p, t in first.items()), "a finished cell was recomputed"
    assert f"{len(first)} already done" in done.stdout
    # the killed run's claim was taken over; nothing temporary is left
    assert not [p for p in out.rglob("*") if p.suffix in (".tmp", ".claim")]


def test_failed_cell_is_recorded_and_sweep_goes_on(tiny_world, tmp_path, monkeypatch):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "nan_method.py").write_text(
        "import torch\n"
        "from avprompt.method import Method, MethodConfig\n"
        "from avprompt.registry import register_method\n"
        "@register_method('nan-probe')\n"
        "class NanProbe(Method):\n"
        "    description = 'diverges on purpose'\n"
        "    runs_on = \"features\"\n"
        "    def __init__(self, encoders, task, config):\n"
        "        super().__init__(encoders, task, config)\n"
        "        self.w = torch.nn.Parameter(torch.zeros(1))\n"
        "    def segment_logits(self, batch):\n"
        "        f = self.features(batch, 'v')\n"
        "        return f[..., :1].expand(*f.shape[:2], self.task.num_outputs) * self.w * float('nan')\n")
    monkeypatch.setenv("AVPROMPT_METHODS_PATH", str(plugin))
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    from avprompt.registry import discover
    discover(force=True)
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["bench", "--shots", "1", "--methods", "nan-probe,zeroshot-clip",
                                 "--modality", "v", "--max-epochs", "1", "--out", str(out), *TINY])
    assert r.exit_code == 1
    recs = {json.loads(p.read_text())["key"]["method"]: json.loads(p.read_text()) for p in out.rglob("seed*.json")}
    assert recs["nan-probe"]["status"] == "failed" and "non-finite loss" in recs["nan-probe"]["error"]
    assert recs["zeroshot-clip"]["status"] == "ok"
    assert "1 failed" in r.output


def test_ray_executor_runs_cells_on_a_local_instance(tiny_world, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    from avprompt.bench import BenchConfig, run_bench
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"AVPROMPT_CACHE": os.environ["AVPROMPT_CACHE"], "OMP_NUM_THREADS": "1"}})
    try:
        cfg = BenchConfig(shots=[1, 2], seeds=[1], tasks=["ave-cls"], methods="linear-probe", modality="v",
                          backbones="tiny", synth_size="tiny", out=str(tmp_path / "res"), executor="ray")
        outcome = run_bench(cfg, echo=lambda *_: None)
    finally:
        ray.shutdown()
    assert outcome["ran"] == 2 and outcome["failed"] == 0
    assert len(list((tmp_path / "res").rglob("seed*.json"))) == 2


def test_ddp_gloo_two_processes_match_single_process(tiny_world, tmp_path):
    import torch
    common = ["-m", "avprompt.distributed", "--method", "clip-adapter", "--modality", "v", "--backbones", "tiny",
              "--synth-size", "tiny", "--epochs", "2", "--set", "batch_size=4", "optimizer=sgd", "momentum=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one.pt")],
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", *common, "--out", str(tmp_path / "two.pt")],
                         capture_output=True, text=True, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert json.loads((tmp_path / "two.json").read_text())["world_size"] == 2
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # training changed the adapter (the comparison is not between two untouched inits)


def test_worker_processes_give_the_serial_results(tiny_world, tmp_path, monkeypatch):
    """--jobs 2 runs cells in two spawned processes: same cells, same metrics as one process."""
    monkeypatch.setenv("AVPROMPT_SYNTH_SIZE", "tiny")
    from avprompt.bench import BenchConfig, run_bench
    base = dict(shots=[1, 2], seeds=[1], tasks=["ave-cls"], methods="linear-probe,coop", modality="v",
                backbones="tiny", synth_size="tiny", max_epochs=2)
    lines = []
    par = run_bench(BenchConfig(**base, out=str(tmp_path / "par"), jobs=2), echo=lines.append)
    ser = run_bench(BenchConfig(**base, out=str(tmp_path / "ser"), jobs=1), echo=lambda *_: None)
    assert par["ran"] == ser["ran"] == 4 and par["failed"] == 0
    assert any("2 worker processes" in str(x) for x in lines)

    def metrics(root):
        return {p.relative_to(root).as_posix(): json.loads(p.read_text())["metrics"]["primary"]
                for p in root.rglob("seed*.json")}
    a, b = metrics(tmp_path / "par"), metrics(tmp_path / "ser")
    assert a.keys() == b.keys() and len(a) == 4
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k
    assert not [p for p in (tmp_path / "par").rglob("*") if p.suffix in (".tmp", ".claim")]


def test_auto_jobs_and_longest_cells_first():
    from avprompt.bench import estimate_one
    from avprompt.engine.cell import CellPlan
    from avprompt.engine.executors import auto_jobs, order_for_workers
    assert auto_jobs("cuda:0", 16) == 1 and auto_jobs("cpu", 2) == 2 and auto_jobs("cpu", 64) == 4
    plans = [CellPlan("ave", "linear-probe", "v", 16, 1), CellPlan("ave", "dg-sct", "av", 1, 1, max_epochs=4),
             CellPlan("ave", "dg-sct", "av", 16, 1, max_epochs=4)]
    order = order_for_workers(plans, estimate_one)
    assert [(p.method, p.shots) for p in order] == [("dg-sct", 16), ("dg-sct", 1), ("linear-probe", 16)]


def _native_threads_after_init():
    from avprompt.engine.executors import _init_worker
    _init_worker(1)
    import scipy.linalg  # noqa: F401  (scipy's own BLAS, loaded after the worker started)
    from threadpoolctl import threadpool_info
    return [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]


def test_worker_processes_run_one_native_thread_each():
    """A sweep's worker runs its BLAS/OpenMP pools (numpy, scipy, sklearn) with the threads it
    was given, like torch: by default each pool takes every core, and two workers on 2 cores ran
    four spinning BLAS threads. Checked in a spawned process, as the sweep's workers are."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        pools = pool.submit(_native_threads_after_init).result(timeout=120)
    assert pools and all(n == 1 for _, n in pools), pools


def test_estimate_follows_each_methods_cost_and_the_setup_is_counted():
    """The printed estimate adds the setup already spent, feature encoding, cells and summary;
    a cell's cost is its method's declared (fixed, per clip x epoch x lr candidate)."""
    import argparse

    from avprompt.bench import cost_units, estimate_one, estimate_setup
    from avprompt.registry import get_method

    def plan(method, shots, max_epochs=50):
        return argparse.Namespace(method=method, shots=shots, max_epochs=max_epochs)

    cls, units = cost_units(plan("clip-adapter", 2))
    assert units == 8 * 2 * 50 * len(cls.default_config().lr_search)  # 3 lr candidates
    fixed, per = get_method("clip-adapter").cost_seconds
    assert estimate_one(plan("clip-adapter", 2)) == pytest.approx(fixed + per * units)
    assert cost_units(plan("zeroshot-clip", 0))[1] == 0 and cost_units(plan("linear-probe", 4))[1] == 32
    # CoCoOp's per-step text pass makes it dearer than CoOp at the same shots (the fitted costs)
    assert estimate_one(plan("cocoop", 16)) > 5 * estimate_one(plan("coop", 16))

    class WS:  # two tasks on one dataset share its clips: encoded once per modality
        def index(self, task):
            return argparse.Namespace(name="AVE", records=[0] * 100)
    todo = [argparse.Namespace(method="coop", task=t, modality=m, shots=1) for t in ("ave", "ave-cls")
            for m in ("v", "a")] + [argparse.Namespace(method="dg-sct", task="ave", modality="av", shots=1)]
    from avprompt.bench import ENCODE_S_PER_CLIP, SUMMARY_S_PER_CELL
    setup = estimate_setup(WS(), todo, n_cells=10)
    assert setup["encode_s"] == pytest.approx(100 * (ENCODE_S_PER_CLIP["v"] + ENCODE_S_PER_CLIP["a"]))
    assert setup["summary_s"] == pytest.approx(10 * SUMMARY_S_PER_CELL)


def test_sweep_profile_fits_cost_seconds_from_a_store(tmp_path):
    """benchmarks/sweep_profile.py --fit recovers (fixed, per unit) from cells' wall times."""
    import importlib.util
    import sys

    from avprompt.bench import cost_units
    spec = importlib.util.spec_from_file_location("sweep_profile", Path(__file__).parents[1] / "benchmarks" / "sweep_profile.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sweep_profile"] = mod
    spec.loader.exec_module(mod)
    import argparse
    for shots in (1, 2, 4, 8, 16):
        units = cost_units(argparse.Namespace(method="coop", shots=shots, max_epochs=50))[1]
        rec = {"status": "ok", "key": {"method": "coop", "shots": shots}, "config": {"epochs": 50},
               "timings": {"wall_s": 2.0 + 0.001 * units}}
        (tmp_path / f"s{shots}").mkdir()
        (tmp_path / f"s{shots}" / "seed1.json").write_text(json.dumps(rec))
    fixed, per, n, err = mod.fit_costs(tmp_path)["coop"]
    assert (n, fixed, per, err) == (5, pytest.approx(2.0, abs=0.01), pytest.approx(0.001), 0.0)


def test_a_worker_ends_when_the_sweep_process_is_killed(tmp_path):
    """A sweep killed by SIGKILL runs no clean-up: its workers watch for it and exit."""
    import subprocess
    import sys
    import time
    code = f"""
import multiprocessing as mp, os, sys, time
from avprompt.engine.executors import _exit_with_parent
def child(parent, path):
    _exit_with_parent(parent, every=0.1)
    open(path, "w").write(str(os.getpid()))
    time.sleep(60)
if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, args=(os.getpid(), {str(tmp_path / 'pid')!r}))
    p.start()
    while not os.path.exists({str(tmp_path / 'pid')!r}):
        time.sleep(0.05)
    os._exit(0)  # like SIGKILL: no join, no clean-up
"""
    script = tmp_path / "sweep.py"  # spawn re-imports the main module: a file, not -c
    script.write_text(code)
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    raise AssertionError("the worker outlived its parent by 20 s")
