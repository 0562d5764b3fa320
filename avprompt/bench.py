"""Sweeps: plan cells, skip finished ones, run them (locally or on Ray), write one JSON per cell,
end with the summary table and the curves.

``run_bench(BenchConfig(...))`` is what ``avprompt bench`` calls; tests call it directly.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from avprompt.atomic import atomic_write_text
from avprompt.config import apply_overrides, load_config_file
from avprompt.engine.executors import auto_jobs, run_processes, run_ray, warm_feature_cache
from avprompt.planning import (EMBEDDED_OVERRIDES, EMBEDDED_SEEDS_IN_NETWORK, cell_identity,  # noqa: F401
                               cell_key, data_tag, format_plan, plan_cells, plan_states, plan_sweep,
                               preflight, select_methods)



def default_tasks() -> list[str]:
    """``--tasks`` when none is given: the tasks whose file sets ``default_bench`` (registry order)."""
    from avprompt.tasks import list_tasks
    return [t.name for t in list_tasks() if t.default_bench]


@dataclass
class BenchConfig:
    """Everything a sweep depends on (saved, resolved, in every result's config)."""

    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    tasks: list[str] = field(default_factory=default_tasks)
    methods: str = "all"  # "all" | comma-separated keys | glob
    # three seeds for the methods that cost seconds; in-network methods (and methods the embedded
    # budget lists in EMBEDDED_SEEDS) run on ``seeds_in_network`` (None: the same seeds)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    seeds_in_network: list[int] | None = field(default_factory=lambda: [1])
    data: str = "synthav"
    backbones: str = "synthav"
    protocol: str = "standard"
    modality: str = "auto"  # auto: cached methods on every modality they support, others on their first
    # a working folder a clone does not contain (git-ignored): the committed snapshot in results/
    # is regenerated on purpose (``--out results --rerun``), never reused by a user's sweep
    out: str = "runs"
    suite: str = "fewshot"
    executor: str = "local"
    address: str | None = None
    device: str = "auto"
    # Caps on the methods' own epochs (0 or None: the methods' reference epochs). Cached-feature
    # methods cost seconds per epoch; in-network methods (DG-SCT, MaPLe) cost ~0.05-0.2 s per clip
    # per epoch on the embedded backbones (2 CPU cores), hence a tighter default cap for them.
    max_epochs: int | None = 50
    max_epochs_in_network: int | None = 4
    patience: int = 0
    select: str = "val"  # "val": selection on validation (initial state included); "last": last epoch
    synth_size: str = dataclasses.field(default_factory=lambda: os.environ.get("AVPROMPT_SYNTH_SIZE", "small"))
    # processes decoding media into the cache (one thread each): one per core, at most 4, as
    # `avprompt data prepare`; the decoded arrays do not depend on it
    workers: int = dataclasses.field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    # cells at once on this machine (local executor): 0 = auto, one per CPU core (at most 4; 1 on
    # a GPU) when the sweep is estimated at over 2 minutes, else 1
    jobs: int = 0
    audio_pass: str = "segment"  # "clip": one audio-tower pass per clip (cached-feature methods, DG-SCT)
    plot: str | None = None  # default: <out>/<suite>/curves.png
    overrides: dict = field(default_factory=dict)  # {method_key: {option: value}}
    save_checkpoints: bool = False  # keep each trained cell's own state (seed<S>.ckpt.pt) for `predict`
    rerun: bool = False  # recompute every cell, even those done with the same identity
    dry_run: bool = False  # print the plan (new / done / stale / skipped) and exit

    def validate(self) -> "BenchConfig":
        """One-line errors for values that would otherwise run a wrong experiment silently."""
        bad = [k for k in self.shots if k <= 0]
        if bad:
            raise ValueError(f"--shots {','.join(map(str, self.shots))}: shots must be positive integers "
                             f"(got {','.join(map(str, bad))}); zero-shot methods run at K=0 by themselves")
        if not self.shots:
            raise ValueError("--shots is empty: give e.g. 1,2,4,8,16")
        if not self.seeds:
            raise ValueError("--seeds is empty: give e.g. 1,2,3")
        if self.seeds_in_network is not None and not self.seeds_in_network:
            raise ValueError("--seeds-in-network is empty: give e.g. 1 (or omit it to use --seeds)")
        if not self.tasks:
            raise ValueError("--tasks is empty: give e.g. ave,ave-cls,llp-cls")
        from avprompt.tasks import few_shot_task
        for task in self.tasks:  # unknown or supervised (`avprompt train`) tasks: one line, before any work
            few_shot_task(task)
        for name in ("max_epochs", "max_epochs_in_network", "patience", "workers", "jobs"):
            v = getattr(self, name)
            if v is not None and v < (1 if name == "workers" else 0):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {v}: must be {'at least 1' if name == 'workers' else '0 (no cap) or positive'}")
        for name, allowed in (("protocol", ("standard", "reference")), ("modality", ("auto", "v", "a", "av")),
                              ("executor", ("local", "ray")), ("select", ("val", "last")),
                              ("audio_pass", ("segment", "clip"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r}: use one of {', '.join(allowed)}")
        if self.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise ValueError(f"--device {self.device}: no CUDA GPU is visible to torch "
                                 "(torch.cuda.is_available() is False); use --device cpu or auto")
        elif self.device not in ("auto", "cpu"):
            raise ValueError(f"--device {self.device!r}: use auto, cpu, cuda or cuda:N")
        return self

    @classmethod
    def from_sources(cls, file: str | None = None, **cli) -> "BenchConfig":
        """defaults -> config file -> CLI options (None means "not given")."""
        cfg = cls()
        if file:
            data = load_config_file(file)
            overrides = data.pop("overrides", {}) or {}
            cfg = apply_overrides(cfg, data, where=f"config file {file}")
            cfg = dataclasses.replace(cfg, overrides=overrides)
        given = {k: v for k, v in cli.items() if v is not None}
        return apply_overrides(cfg, given, where="command line") if given else cfg


# Cost of a cell by ``runs_on`` for methods that declare no ``cost_seconds`` (embedded towers,
# one single-threaded worker; the defaults are the fitted CoOp and DG-SCT-like in-network costs).
DEFAULT_COST = {"features": (1.0, 2e-4), "network": (30.0, 0.15)}
# Setup the cells do not include (2 cores, embedded towers, measured on the default sweep):
# encoding one clip's 10 segments for the feature cache, per modality; the summary per cell.
# (Re-measured on the default sweep at 0902fd3: its ave and llp clips encoded in 26 s, both
# modalities; 759 cells summarised in 4 s.)
ENCODE_S_PER_CLIP = {"v": 0.008, "a": 0.012}
SUMMARY_S_PER_CELL = 0.006


def cost_units(plan, n_train_per_shot: int = 8) -> tuple[type, float]:
    """(method class, training clip x epoch x lr-candidate count) of one cell: the variable part
    of its cost (a "fit" method: training clips; zero-shot: 0). ``n_train_per_shot``: classes per task (SynthAV: 8), so K shots ~ 8K clips."""
    from avprompt.registry import get_method
    cls = get_method(plan.method)
    clips = n_train_per_shot * max(plan.shots or 0, 0)
    if not cls.trains:  # zero-shot: nothing; fit (closed form, a cache): once over the shots
        return cls, float(clips if cls.kind == "fit" else 0)
    cfg = cls.default_config()
    epochs = getattr(cfg, "epochs", 10) or 10
    if plan.max_epochs:
        epochs = min(epochs, plan.max_epochs)
    return cls, float(clips * epochs * max(1, len(getattr(cfg, "lr_search", ()) or ())))


def estimate_one(plan, n_train_per_shot: int = 8) -> float:
    """Rough seconds of one cell in one single-threaded worker (embedded towers): the method's
    ``cost_seconds`` (fixed + per unit of ``cost_units``). Used for the printed estimate and to
    start the longest cells first when cells run in parallel."""
    cls, units = cost_units(plan, n_train_per_shot)
    fixed, per_unit = cls.cost_seconds or DEFAULT_COST[cls.runs_on]
    return fixed + per_unit * units


def estimate_seconds(plans, n_train_per_shot: int = 8) -> float:
    """Sum of ``estimate_one`` over the plans (one process)."""
    return sum(estimate_one(p, n_train_per_shot) for p in plans)


def estimate_setup(ws, todo, n_cells: int) -> dict:
    """Seconds of the work around the cells: encoding every clip the cached-feature cells read
    (an upper bound: clips already in the feature cache cost nothing) and the summary."""
    from avprompt.registry import get_method
    mods: dict[str, set] = {}
    for p in todo:
        if get_method(p.method).runs_on == "features":
            mods.setdefault(p.task, set()).update(m for m in ("v", "a") if m in p.modality)
    datasets: dict[str, tuple[int, set]] = {}
    for task, ms in mods.items():  # tasks on one dataset (ave, ave-cls) share its clips
        index = ws.index(task)
        n, seen = datasets.get(index.name, (len(index.records), set()))
        datasets[index.name] = (n, seen | ms)
    encode = sum(n * ENCODE_S_PER_CLIP[m] for n, ms in datasets.values() for m in ms)
    return {"encode_s": encode, "summary_s": SUMMARY_S_PER_CELL * n_cells}


_WORKSPACE = None


def _workspace(cfg: BenchConfig):
    """One workspace per process (Ray workers build their own)."""
    global _WORKSPACE
    from avprompt.engine.workspace import Workspace
    sig = (cfg.data, cfg.backbones, cfg.device, cfg.synth_size)
    if _WORKSPACE is None or _WORKSPACE[0] != sig:
        _WORKSPACE = (sig, Workspace(cfg.data, cfg.backbones, cfg.device, cfg.synth_size, workers=cfg.workers))
    return _WORKSPACE[1]


def _epoch_bar():
    """tqdm within a cell: one tick per epoch, showing loss and validation score."""
    from avprompt.progress import progress
    state = {}

    def update(total, row):
        if "bar" not in state:
            state["bar"] = progress(total=total, desc="  epochs", unit="ep", leave=False)
        bar = state["bar"]
        bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val": f"{row['val']:.1f}"} if "val" in row else {}))
        bar.update(1)
        if bar.n >= total:
            bar.close()
    return update


class StoreWriteError(OSError):
    """The results store cannot be written (full or read-only disk): the sweep stops, finished
    cells are kept."""


def execute_cell(cfg: BenchConfig, plan, show_progress: bool = True) -> dict:
    """Claim, run and record one cell (ok or failed); never raises for a cell's own failure.

    Returns {"path", "status" ("ok" | "failed" | "busy"), "error", "primary", "warnings",
    "reference_changes", "owner"}; "busy" means another live sweep holds the cell's claim and
    nothing was computed. A store that cannot be written raises ``StoreWriteError``.
    """
    import warnings

    from avprompt.engine.cell import run_cell
    from avprompt.cell_claims import claim_cell, release_cell
    from avprompt.results import (build_result, cell_state, peak_memory_mb, predictions_path,
                                  result_path, write_predictions, write_result)

    ws = _workspace(cfg)
    key = cell_key(cfg, plan, ws.backbone_name)
    path = str(result_path(cfg.out, key))
    try:
        owner = claim_cell(cfg.out, key)
    except OSError as e:
        raise StoreWriteError(f"cannot write the claim for {path}: {e.strerror or e}") from e
    if owner is not None:
        return {"path": path, "status": "busy", "error": None, "primary": None, "warnings": [],
                "reference_changes": [], "owner": f"pid {owner.get('pid')} on {owner.get('host')}"}
    sweep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("overrides", "rerun", "dry_run")}
    predictions = method = None
    try:
        identity = cell_identity(cfg, plan, ws)
        # another sweep may have finished this cell between our plan and our claim
        if not cfg.rerun and cell_state(cfg.out, key, identity)[0] == "done":
            return {"path": path, "status": "busy", "error": None, "primary": None, "warnings": [],
                    "reference_changes": [], "owner": "a sweep that finished it meanwhile"}
        try:
            # Per-cell warnings (a class short of K shots, a context length that does not fit) go
            # into the cell's JSON and are grouped once at the end of the sweep.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = run_cell(ws, plan, progress=_epoch_bar() if show_progress else None)
            method = out.pop("method_obj", None)
            predictions = out.pop("predictions", None)
            extra = out["extra"]
            extra["warnings"] = sorted({str(w.message) for w in caught
                                        if not issubclass(w.category, (DeprecationWarning, FutureWarning))}
                                       | set(extra.get("warnings", [])))
            extra["peak_memory_mb"] = peak_memory_mb(str(ws.device))
            extra["identity"] = identity
            record = build_result(key, "ok", out["metrics"], {**out["config"], "sweep": sweep}, extra)
        except Exception as e:  # a failing cell is recorded and the sweep goes on
            reason = f"{type(e).__name__}: {e}"
            tb = traceback.format_exc(limit=3)
            record = build_result(key, "failed", {}, {"sweep": sweep}, {"traceback": tb, "identity": identity},
                                  error=reason)
        try:
            if record["status"] == "ok" and predictions is not None:
                # first, so that a record on disk always has its predictions beside it
                write_predictions(cfg.out, key, predictions)
                record["predictions"] = predictions_path(cfg.out, key).name
            if record["status"] == "ok" and cfg.save_checkpoints and method is not None:
                from avprompt.predict import cell_checkpoint, checkpoint_path, save_cell_checkpoint
                ckpt = save_cell_checkpoint(checkpoint_path(path), cell_checkpoint(method, cfg.backbones, identity))
                record["checkpoint"] = ckpt.name
            write_result(cfg.out, record)
        except OSError as e:
            raise StoreWriteError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        release_cell(cfg.out, key)
    return {"path": path, "status": record["status"], "error": record["error"],
            "primary": record["metrics"].get("primary"), "warnings": record.get("warnings", []),
            "reference_changes": [{"method": plan.method, **c} for c in record.get("reference_changes", [])],
            "owner": None}


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """One-line error unless a file can be created in ``folder`` (made if missing)."""
    import tempfile
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".avprompt-write-check-"):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path} is not writable ({e.strerror or e}); "
                         f"choose another folder or free space") from None


def run_bench(cfg: BenchConfig, echo=print) -> dict:
    """Plan, reuse cells done with the same identity, run the rest, then summarise.

    Returns counts and paths. ``cfg.dry_run`` prints the plan and runs nothing.
    """
    from avprompt.progress import progress

    t_setup = time.perf_counter()
    cfg.validate()
    plans, skipped = plan_sweep(cfg)
    if not plans:
        why = "; ".join(w for _, w in skipped)
        raise ValueError("the sweep has no cells: check --tasks, --methods, --shots and --modality"
                         + (f" ({why})" if why else ""))
    if not cfg.dry_run:
        from avprompt.engine.workspace import cache_root
        check_writable(Path(cfg.out), "--out")
        check_writable(cache_root(), "the cache folder (AVPROMPT_CACHE)")
    # Fail fast, before any cell: data folders, datasets of every task and the backbones must load.
    ws = _workspace(cfg)
    for task in cfg.tasks:
        ws.index(task)
    audio = ws.encoders.audio if cfg.audio_pass == "clip" else None  # building towers costs ~10 s
    if audio is not None and audio.clip_samples < 10 * audio.sample_rate:
        raise ValueError(f"--audio-pass clip: the audio tower's input window is {audio.clip_samples / audio.sample_rate:g} s "
                         f"({ws.backbone_name}), shorter than a 10 s clip; use --audio-pass segment (the "
                         "embedded SynthAV towers were pre-trained on 1 s)")
    states = plan_states(cfg, plans, ws)
    if cfg.dry_run:
        echo(format_plan(states, skipped))
        return {"planned": len(plans), "ran": 0, "failed": 0, "states": states, "skipped": skipped,
                "table": "", "plot": None}
    todo = [p for p, state, _ in states if state != "done"]
    for p, state, detail in states:
        if state in ("stale", "rerun"):
            echo(f"rerun {p.task} {p.method}@{p.modality} K={p.shots} seed={p.seed}: {detail}")
    est = estimate_seconds(todo)
    # auto: worker processes pay ~15 s of start-up each, so only sweeps of minutes use them
    jobs = cfg.jobs or (auto_jobs(cfg.device if cfg.device != "auto" else ws.device.type) if est > 120 else 1)
    est /= jobs if cfg.executor == "local" and len(todo) > 1 else 1
    setup = estimate_setup(ws, todo, len(plans)) if todo else {"encode_s": 0.0, "summary_s": 0.0}
    so_far = time.perf_counter() - t_setup
    echo(f"sweep {cfg.suite}: {len(plans)} cells ({len(plans) - len(todo)} already done, {len(todo)} to run), "
         f"tasks {','.join(cfg.tasks)}, shots {','.join(map(str, cfg.shots))}, seeds {','.join(map(str, cfg.seeds))}"
         f"{'' if not cfg.seeds_in_network else ' (in-network: ' + ','.join(map(str, cfg.seeds_in_network)) + ')'}, "
         f"data {cfg.data}, backbones {cfg.backbones}")
    if todo:
        total = so_far + setup["encode_s"] + est + setup["summary_s"]
        echo(f"estimated {total / 60:.1f} min on CPU: setup so far {so_far / 60:.1f} (data, world generation), "
             f"feature encoding <= {setup['encode_s'] / 60:.1f} (0 for clips already cached), "
             f"cells {est / 60:.1f} on {jobs if cfg.executor == 'local' else 'Ray'} "
             f"worker{'s' if jobs > 1 or cfg.executor != 'local' else ''}, summary {setup['summary_s'] / 60:.1f}")
    for key, why in skipped:
        echo(f"skipped {key}: {why}")
    media = ws.media_summary(cfg.tasks) if todo else ""
    if media:
        echo(media)
    if todo:
        preflight(ws, todo, echo)
    t0 = time.perf_counter()
    outcomes = []
    try:
        if cfg.executor == "ray":
            outcomes = run_ray(cfg, todo, echo)
        elif jobs > 1 and len(todo) > 1:
            warm_feature_cache(ws, todo)  # once here, not once per worker
            echo(f"running {len(todo)} cells on {jobs} worker processes (--jobs)")
            outcomes = run_processes(cfg, todo, jobs, echo)
        elif todo:
            bar = progress(todo, desc="cells", unit="cell", work=[estimate_one(p) for p in todo])
            for p in bar:
                bar.set_postfix_str(f"{p.task} {p.method}@{p.modality} K={p.shots} s={p.seed}")
                outcomes.append(execute_cell(cfg, p))
    except StoreWriteError as e:
        done = sum(1 for o in outcomes if o["status"] != "busy")
        raise ValueError(f"{e}; the {done} cells finished before it are kept in {cfg.out}: "
                         "free space (or fix permissions) and rerun the same command to resume") from None
    failed = [o for o in outcomes if o["status"] == "failed"]
    busy = [o for o in outcomes if o["status"] == "busy"]
    for o in failed:
        echo(f"FAILED {o['path']}: {o['error']}")
    elsewhere = [o for o in busy if str(o["owner"]).startswith("pid")]
    if elsewhere:
        echo(f"{len(elsewhere)} cells are being computed by another sweep ({elsewhere[0]['owner']}); "
             "rerun when it finishes to include them")
    if len(busy) > len(elsewhere):
        echo(f"{len(busy) - len(elsewhere)} cells were finished by another sweep meanwhile (reused)")
    echo_grouped_notes(outcomes, echo)
    summary = summarize_store(cfg, echo)
    wall = time.perf_counter() - t0
    ran = len(outcomes) - len(busy)
    echo(f"{ran} cells run in {wall / 60:.1f} min, {len(failed)} failed; "
         f"results in {sweep_root(cfg)}")
    if ran:
        write_stamp(cfg, wall, ran, len(failed))
    return {"planned": len(plans), "ran": ran, "failed": len(failed), "busy": len(busy), **summary}


def echo_grouped_notes(outcomes: list[dict], echo=print) -> None:
    """Changes from reference values and warnings, grouped and counted (once, not per cell)."""
    changes: dict[str, int] = {}
    for o in outcomes:
        for c in o.get("reference_changes", []):
            text = f"{c['method']}: {c['field']} {c.get('reference')} -> {c.get('used')} ({c.get('reason', '')})"
            changes[text] = changes.get(text, 0) + 1
    if changes:
        echo(f"WARNING: {sum(changes.values())} cells ran with values changed from a method's reference "
             "(marked in `avprompt report`):")
        for text, n in sorted(changes.items()):
            echo(f"  {n:>4} cells  {text}")
    import re
    warned: dict[str, int] = {}
    for o in outcomes:
        for w in o.get("warnings", []):
            # one line per kind of message: numbers (K, counts, seeds) differ between cells
            head = re.sub(r"\d+(\.\d+)?", "N", w)
            head = head if len(head) <= 140 else head[:137] + "..."
            warned[head] = warned.get(head, 0) + 1
    if warned:
        echo(f"{sum(1 for o in outcomes if o.get('warnings'))} cells recorded warnings (full text in 'warnings' of their JSON):")
        for head, n in sorted(warned.items(), key=lambda kv: -kv[1])[:12]:
            echo(f"  {n:>4}x  {head}")


def sweep_root(cfg: BenchConfig) -> Path:
    """The folder of one experiment family: <out>/<suite>/<data>/<protocol>."""
    from avprompt.results import sanitize
    return Path(cfg.out) / sanitize(cfg.suite) / sanitize(data_tag(cfg)) / sanitize(cfg.protocol)


def write_stamp(cfg: BenchConfig, wall_s: float, ran: int, failed: int) -> None:
    """``sweep.json`` beside the results: the command's config, the commit, when and how long."""
    import datetime as dt
    import json

    from avprompt.results import git_commit, versions
    root = sweep_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    stamp = {"config": {k: v for k, v in dataclasses.asdict(cfg).items()}, "git_commit": git_commit(),
             "versions": versions(), "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "wall_s": round(wall_s, 1), "cells_run": ran, "cells_failed": failed, "argv": sys.argv}
    atomic_write_text(root / "sweep.json", json.dumps(stamp, indent=2) + "\n")


def summarize_store(cfg: BenchConfig, echo=print) -> dict:
    """The sweep's table (K columns, mean ± 95% CI over seeds and test videos), curves with CI
    bands and ``summary.csv``, from the result files of this experiment family alone."""
    from avprompt.report import compact_table, failed_cells, plot_curves, summarize, to_dataframe, to_markdown
    from avprompt.results import load_results

    root = sweep_root(cfg)
    if not root.is_dir():
        return {"table": "", "plot": None}
    results = load_results(root)
    if not results:
        return {"table": "", "plot": None}
    df = to_dataframe(results)
    summary = summarize(df)  # bootstrap and paired differences, once
    if summary.empty:  # every cell failed: their reasons were printed; nothing to tabulate
        return {"table": "", "plot": None}
    table = to_markdown(summary, failed_cells(df))
    echo(compact_table(summary))
    plot = Path(cfg.plot) if cfg.plot else root / "curves.png"
    plot_curves(df, plot, summary=summary)
    atomic_write_text(root / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(root / "summary.md", table + "\n")
    echo(f"curves: {plot}\nsummary: {root / 'summary.csv'}, {root / 'summary.md'}")
    return {"table": table, "plot": str(plot)}
