"""Sweeps: plan cells, skip finished ones, run them (locally or on Ray), write one JSON per cell,
end with the summary table and the curves.

``run_bench(BenchConfig(...))`` is what ``avprompt bench`` calls; tests call it directly.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from avprompt.config import apply_overrides, load_config_file

DEFAULT_TASKS = ("ave", "ave-cls", "llp-cls")
#: Overrides the embedded SynthAV sweep applies (recorded in each result's config) so that the
#: default sweep fits ~30 minutes on 2 CPU cores: CoCoOp re-encodes every class prompt for every
#: segment (per-sample conditioning), ~1 min per 16-shot AVE cell at its reference batch 1 and
#: 10 epochs, so it runs at batch 8 for 4 epochs here. Per-method overrides in a config file win.
EMBEDDED_OVERRIDES = {"cocoop": {"batch_size": 8, "epochs": 4}}


@dataclass
class BenchConfig:
    """Everything a sweep depends on (saved, resolved, in every result's config)."""

    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    methods: str = "all"  # "all" | comma-separated keys | glob
    seeds: list[int] = field(default_factory=lambda: [1])
    data: str = "synthav"
    backbones: str = "synthav"
    protocol: str = "standard"
    modality: str = "auto"  # auto: cached methods on every modality they support, others on their first
    out: str = "results/synthav"
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
    synth_size: str = dataclasses.field(default_factory=lambda: os.environ.get("AVPROMPT_SYNTH_SIZE", "small"))
    workers: int = 1
    plot: str | None = None  # default: <out>/<suite>/curves.png
    overrides: dict = field(default_factory=dict)  # {method_key: {option: value}}

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


def select_methods(spec: str) -> list[str]:
    from avprompt.registry import discover
    keys = sorted(discover())
    if spec == "all":
        return keys
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        hits = [k for k in keys if fnmatch.fnmatch(k, part)]
        if not hits:
            raise ValueError(f"--methods {part!r} matches no registered method; `avprompt methods` lists them")
        out += [h for h in hits if h not in out]
    return out


def plan_cells(cfg: BenchConfig) -> list:
    """Every (task, method, modality, shots, seed) of the sweep, in run order (cheap first)."""
    from avprompt.engine.cell import CellPlan
    from avprompt.registry import get_method

    overrides = {k: dict(v) for k, v in cfg.overrides.items()}
    if cfg.data == "synthav":
        for key, opts in EMBEDDED_OVERRIDES.items():
            overrides.setdefault(key, dict(opts))

    cells = []
    for key in select_methods(cfg.methods):
        cls = get_method(key)
        if cfg.modality == "auto":
            mods = list(cls.supported_modalities) if cls.cacheable else [cls.supported_modalities[0]]
        elif cfg.modality in cls.supported_modalities:
            mods = [cfg.modality]
        else:
            continue
        zero_shot = cls.training_free and not getattr(cls, "needs_fit", False) and key.startswith("zeroshot")
        shots = [0] if zero_shot else [s for s in cfg.shots if s > 0]
        seeds = cfg.seeds[:1] if zero_shot else cfg.seeds
        for task in cfg.tasks:
            for mod in mods:
                for k in shots:
                    for seed in seeds:
                        cap = cfg.max_epochs if cls.cacheable else cfg.max_epochs_in_network
                        cells.append(CellPlan(task, key, mod, k, seed, cfg.protocol,
                                              dict(overrides.get(key, {})), cap, cfg.patience))
    cells.sort(key=lambda c: (get_method(c.method).cacheable is False, c.method, c.task, c.modality, c.shots, c.seed))
    return cells


def cell_key(cfg: BenchConfig, plan, backbone_name: str):
    from avprompt.results import CellKey
    return CellKey(cfg.suite, plan.task, plan.method, backbone_name, plan.shots, plan.seed, plan.modality)


def estimate_seconds(plans, n_train_per_shot: int = 8) -> float:
    """Rough CPU estimate (2 cores, embedded backbones, measured): in-network methods ~0.15 s per
    clip per epoch (fwd+bwd through both towers) plus evaluation, cached methods ~1.5 s per cell."""
    from avprompt.registry import get_method
    total = 0.0
    for p in plans:
        cls = get_method(p.method)
        if cls.cacheable:
            total += 1.5
        else:
            epochs = p.max_epochs or 10
            total += 0.15 * n_train_per_shot * p.shots * epochs + 3 * epochs + 5
    return total


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
    from tqdm import tqdm
    state = {}

    def update(total, row):
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc="  epochs", unit="ep", leave=False, file=sys.stderr)
        bar = state["bar"]
        bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val": f"{row['val']:.1f}"} if "val" in row else {}))
        bar.update(1)
        if bar.n >= total:
            bar.close()
    return update


def execute_cell(cfg: BenchConfig, plan, show_progress: bool = True) -> dict:
    """Run one cell and write its result (ok or failed); never raises for a cell's own failure."""
    from avprompt.engine.cell import run_cell
    from avprompt.results import build_result, peak_memory_mb, result_path, write_result

    ws = _workspace(cfg)
    key = cell_key(cfg, plan, ws.encoders.name)
    sweep = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "overrides"}
    import warnings
    try:
        # Per-cell warnings (a class short of K shots, a context length that does not fit) go
        # into the cell's JSON instead of repeating on the terminal for every cell.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = run_cell(ws, plan, progress=_epoch_bar() if show_progress else None)
        out.pop("method_obj", None)
        extra = out["extra"]
        extra["warnings"] = sorted({str(w.message) for w in caught
                                    if not issubclass(w.category, (DeprecationWarning, FutureWarning))})
        extra["peak_memory_mb"] = peak_memory_mb(str(ws.device))
        record = build_result(key, "ok", out["metrics"], {**out["config"], "sweep": sweep}, extra)
    except Exception as e:  # a failing cell is recorded and the sweep goes on
        reason = f"{type(e).__name__}: {e}"
        tb = traceback.format_exc(limit=3)
        record = build_result(key, "failed", {}, {"sweep": sweep}, {"traceback": tb}, error=reason)
    write_result(cfg.out, record)
    return {"path": str(result_path(cfg.out, key)), "status": record["status"], "error": record["error"],
            "primary": record["metrics"].get("primary"),
            "warnings": len(record.get("extra", {}).get("warnings", []))}


def run_bench(cfg: BenchConfig, echo=print) -> dict:
    """Plan, skip finished cells, run the rest, then summarise. Returns counts and paths."""
    from tqdm import tqdm

    from avprompt.encoders import BackboneSpec
    from avprompt.results import cell_done

    plans = plan_cells(cfg)
    if not plans:
        raise ValueError("the sweep has no cells: check --tasks, --methods, --shots and --modality")
    backbone_name = BackboneSpec.parse(cfg.backbones).name
    # Fail fast, before any cell: data folders, datasets of every task and the backbones must load.
    ws = _workspace(cfg)
    for task in cfg.tasks:
        ws.index(task)
    ws.encoders
    todo = [p for p in plans if not cell_done(cfg.out, cell_key(cfg, p, backbone_name))]
    est = estimate_seconds(todo)
    echo(f"sweep {cfg.suite}: {len(plans)} cells ({len(plans) - len(todo)} already done, {len(todo)} to run), "
         f"tasks {','.join(cfg.tasks)}, shots {','.join(map(str, cfg.shots))}, seeds {','.join(map(str, cfg.seeds))}, "
         f"data {cfg.data}, backbones {cfg.backbones}; estimated {est / 60:.1f} min on CPU")
    t0 = time.perf_counter()
    outcomes = []
    if cfg.executor == "ray":
        outcomes = _run_ray(cfg, todo, echo)
    elif cfg.executor == "local":
        bar = tqdm(todo, desc="cells", unit="cell", file=sys.stderr)
        for p in bar:
            bar.set_postfix_str(f"{p.task} {p.method}@{p.modality} K={p.shots} s={p.seed}")
            outcomes.append(execute_cell(cfg, p))
    else:
        raise ValueError(f"--executor {cfg.executor!r}: use local or ray")
    failed = [o for o in outcomes if o["status"] != "ok"]
    for o in failed:
        echo(f"FAILED {o['path']}: {o['error']}")
    warned = sum(1 for o in outcomes if o.get("warnings"))
    if warned:
        echo(f"{warned} cells recorded warnings (e.g. classes with fewer clips than K): see 'warnings' in their JSON")
    summary = summarize_store(cfg, echo)
    echo(f"{len(outcomes)} cells run in {(time.perf_counter() - t0) / 60:.1f} min, {len(failed)} failed; "
         f"results in {Path(cfg.out) / cfg.suite}")
    return {"planned": len(plans), "ran": len(outcomes), "failed": len(failed), **summary}


def summarize_store(cfg: BenchConfig, echo=print) -> dict:
    from avprompt.report import failed_cells, plot_curves, summarize, to_dataframe, to_markdown
    from avprompt.results import load_results

    root = Path(cfg.out) / cfg.suite
    results = load_results(root)
    if not results:
        return {"table": "", "plot": None}
    df = to_dataframe(results)
    summary = summarize(df)
    table = to_markdown(summary, failed_cells(df))
    echo(compact_table(summary))
    plot = Path(cfg.plot) if cfg.plot else root / "curves.png"
    plot_curves(df, plot)
    summarize(df).to_csv(root / "summary.csv", index=False)
    echo(f"curves: {plot}\nsummary: {root / 'summary.csv'}")
    return {"table": table, "plot": str(plot)}


def compact_table(summary) -> str:
    """Markdown: one row per (task, method), one column per shot count, mean ± std (n seeds)."""
    from avprompt.report import markdown_table

    def cell(r):
        std = "" if r["n"] < 2 or r["std"] != r["std"] else f" ± {r['std']:.1f}"
        return f"{r['mean']:.1f}{std}"
    s = summary.assign(value=summary.apply(cell, axis=1))
    pivot = s.pivot_table(index=["task", "method_id"], columns="shots", values="value", aggfunc="first")
    pivot.columns = [f"K={c}" for c in pivot.columns]
    pivot = pivot.reset_index().rename(columns={"method_id": "method"}).fillna("")
    seeds = int(summary["n"].max()) if len(summary) else 0
    return f"primary metric (%), mean ± std over up to {seeds} seed(s):\n\n" + markdown_table(pivot)


def _run_ray(cfg: BenchConfig, todo, echo) -> list[dict]:
    """Each cell is a Ray task (1 CPU, or 1 GPU when the device is cuda) writing to the store."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs ray: pip install 'avprompt[ray]'") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False)
        started = True
    gpus = 1 if cfg.device.startswith("cuda") else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus)(execute_cell)
    try:
        refs = [remote.remote(cfg, p, False) for p in todo]
        from tqdm import tqdm
        out = []
        with tqdm(total=len(refs), desc="cells (ray)", unit="cell", file=sys.stderr) as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                out += ray.get(done)
                bar.update(len(done))
        return out
    finally:
        if started:
            ray.shutdown()
