"""Planning a sweep: which cells (task, method, modality, shots, seed) run, under which path
(``cell_key``) and identity (``cell_identity``: what makes a cell the same experiment), and which
are new / done / stale before anything runs (``plan_states``, ``format_plan``).

``avprompt.bench`` runs the plan; this module imports no torch at module level.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avprompt.bench import BenchConfig

#: Overrides the embedded SynthAV sweep applies (recorded in each result's config) so that the
#: default sweep fits ~30 minutes on 2 CPU cores: CoCoOp re-encodes every class prompt for every
#: segment (per-sample conditioning), ~1 min per 16-shot AVE cell at its reference batch 1 and
#: 10 epochs, so it runs at batch 8 for 4 epochs here. Per-method overrides in a config file win.
#: Tip-Adapter(-F) score every (alpha, beta) candidate on validation with the task's primary
#: metric of their (fused) output; the reference grid (200 x 20 = 4000 candidates, up to 24000 for
#: av) costs ~40 s per LLP cell, so the embedded sweep searches a 40 x 10 grid over the same ranges.
EMBEDDED_OVERRIDES = {"cocoop": {"batch_size": 8, "epochs": 4},
                      "tip-adapter": {"search_beta_steps": 40, "search_alpha_steps": 10, "search_passes": 1},
                      "tip-adapter-f": {"search_beta_steps": 40, "search_alpha_steps": 10, "search_passes": 1}}
#: Methods that run on cached features but cost like in-network ones (CoCoOp's meta-net re-encodes
#: every class prompt for every segment): on the embedded sweep they get ``seeds_in_network``.
EMBEDDED_SEEDS_IN_NETWORK = ("cocoop",)


def select_methods(spec: str) -> list[str]:
    return _select(spec)[0]


def _select(spec: str) -> tuple[list[str], set[str]]:
    """(method keys in order, the keys the user named exactly rather than by ``all`` or a glob)."""
    from avprompt.registry import discover
    keys = sorted(discover())
    if spec == "all":
        return keys, set()
    out, named = [], set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        hits = [k for k in keys if fnmatch.fnmatch(k, part)]
        if not hits:
            raise ValueError(f"--methods {part!r} matches no registered method; `avprompt methods` lists them")
        if part in keys:
            named.add(part)
        out += [h for h in hits if h not in out]
    return out, named


def plan_cells(cfg: BenchConfig) -> list:
    """Every (task, method, modality, shots, seed) of the sweep, in run order (cheap first)."""
    return plan_sweep(cfg)[0]


def plan_sweep(cfg: BenchConfig) -> tuple[list, list[tuple[str, str]]]:
    """(cells in run order, [(method, why it has no cell)]).

    A method the user named exactly (``--methods dg-sct``) or gave overrides to that gets no cell is
    an error saying why (e.g. "dg-sct runs on av only; --modality v excludes it"); a method picked by
    ``all`` or a glob is skipped with its reason (shown by ``--dry-run`` and the sweep's header).
    """
    from avprompt.engine.cell import CellPlan
    from avprompt.registry import get_method

    keys, named = _select(cfg.methods)
    unknown = sorted(set(cfg.overrides) - set(keys))
    if unknown:
        raise ValueError(f"overrides for {', '.join(unknown)}: not among the sweep's methods "
                         f"(--methods {cfg.methods}); remove the [overrides.{unknown[0]}] table or add the method")
    overrides = {k: dict(v) for k, v in cfg.overrides.items()}
    if cfg.data == "synthav":
        for key, opts in EMBEDDED_OVERRIDES.items():
            overrides.setdefault(key, dict(opts))

    cells, skipped = [], []
    for key in keys:
        cls = get_method(key)
        if cfg.modality == "auto":
            mods = list(cls.supported_modalities) if cls.runs_on == "features" else [cls.supported_modalities[0]]
        elif cfg.modality in cls.supported_modalities:
            mods = [cfg.modality]
        else:
            why = f"{key} runs on {'|'.join(cls.supported_modalities)} only; --modality {cfg.modality} excludes it"
            if key in named or key in cfg.overrides:
                raise ValueError(why + f" (use --modality auto or {cls.supported_modalities[0]})")
            skipped.append((key, why))
            continue
        zero_shot = cls.kind == "zero-shot"
        shots = [0] if zero_shot else list(cfg.shots)
        heavy = cls.runs_on == "network" or (cfg.data == "synthav" and key in EMBEDDED_SEEDS_IN_NETWORK)
        seeds = cfg.seeds_in_network if heavy and cfg.seeds_in_network else cfg.seeds
        seeds = seeds[:1] if zero_shot else seeds  # deterministic: one seed says all
        cap = cfg.max_epochs if cls.runs_on == "features" else cfg.max_epochs_in_network
        for task in cfg.tasks:
            for mod in mods:
                opts = dict(overrides.get(key, {}))
                if cfg.audio_pass != "segment" and cfg.audio_pass in cls.implemented_audio_passes() and "a" in mod:
                    opts.setdefault("audio_pass", cfg.audio_pass)  # the v-only cells stay the same cells
                for k in shots:
                    for seed in seeds:
                        cells.append(CellPlan(task, key, mod, k, seed, cfg.protocol,
                                              dict(opts), cap, cfg.patience,
                                              select=cfg.select))
    cells.sort(key=lambda c: (get_method(c.method).runs_on == "network", c.method, c.task, c.modality,
                              c.shots, c.seed))
    return cells, skipped


def _file_fingerprint(path: str) -> str:
    import hashlib
    p = Path(path)
    if not p.is_file():
        return f"missing:{p}"
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def data_tag(cfg: BenchConfig) -> str:
    """The short path component naming the data location (``synthav-small-0``, ``AVE-1a2b3c4d``)."""
    import hashlib
    if cfg.data == "synthav":
        return f"synthav-{cfg.synth_size}-0"
    target = cfg.data.split(":", 1)[1] if cfg.data.startswith("manifest:") else cfg.data
    path = Path(target).expanduser().resolve()
    stem = path.stem if cfg.data.startswith("manifest:") else path.name
    return f"{stem or 'data'}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def cell_key(cfg: BenchConfig, plan, backbone_name: str):
    from avprompt.results import CellKey
    return CellKey(cfg.suite, plan.task, plan.method, backbone_name, plan.shots, plan.seed, plan.modality,
                   data=data_tag(cfg), protocol=plan.protocol)


def cell_identity(cfg: BenchConfig, plan, ws) -> dict:
    """What makes a cell the same experiment (compared before a finished cell is reused).

    The config is the method's resolved config as requested (defaults -> file -> CLI, epoch caps
    applied). What actually ran (after e.g. a context length shrunk to fit a text tower) is a
    deterministic function of it, the backbones and the task, all three in this identity; the
    record stores that effective config beside it.
    """
    from avprompt.engine.cell import method_config
    from avprompt.registry import get_method
    from avprompt.results import identity_hash

    mcfg, epochs = method_config(get_method(plan.method), plan)
    import json
    # through JSON once, as the record will hold it (tuples become lists), so a reread compares equal
    config = json.loads(json.dumps({**dataclasses.asdict(mcfg), "epochs": epochs, "patience": plan.patience,
                                    "select": plan.select}, default=str))
    if getattr(plan, "checkpoint_in", None):  # a transfer: the pre-trained state is part of the experiment
        config["checkpoint"] = _file_fingerprint(plan.checkpoint_in)
    return {"suite": cfg.suite, "task": plan.task, "method": plan.method, "modality": plan.modality,
            "shots": plan.shots, "seed": plan.seed, "protocol": plan.protocol,
            "data": ws.data_identity(plan.task), "backbones": ws.backbone_identity,
            "config": config, "config_hash": identity_hash(config)}


def plan_states(cfg: BenchConfig, plans, ws) -> list[tuple[object, str, str]]:
    """[(plan, state, detail)]: state new | done | stale | failed (rerun forces "rerun")."""
    from avprompt.results import cell_state
    out = []
    for p in plans:
        key = cell_key(cfg, p, ws.backbone_name)
        state, detail = cell_state(cfg.out, key, cell_identity(cfg, p, ws))
        if cfg.rerun and state == "done":
            state, detail = "rerun", "--rerun"
        out.append((p, state, detail))
    return out


def preflight(ws, plans, echo=print) -> None:
    """Before any cell: every task has test clips with readable media, and training clips for the
    methods that need them (one-line error naming the split); a missing validation split is
    said once (those cells keep their last epoch)."""
    import warnings

    from avprompt.data.splits import make_split
    from avprompt.engine.cell import check_splits
    from avprompt.registry import get_method
    seen = set()
    for p in plans:
        cls = get_method(p.method)
        sig = (p.task, p.protocol, cls.kind == "zero-shot")
        if sig in seen:
            continue
        seen.add(sig)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            split = make_split(ws.index(p.task), p.task, p.protocol, shots=None, seed=p.seed)
            bad = ws.bad_clips(p.task)
            check_splits(p, cls, split, *([c for c in ids if c not in bad]
                                          for ids in (split.train, split.val, split.test)), bad)
        for w in caught:
            if "no validation clip" in str(w.message):
                echo(f"warning: {w.message}")


def format_plan(states, skipped) -> str:
    lines = []
    for p, state, detail in states:
        label = f"{p.task} {p.method}@{p.modality} K={p.shots} seed={p.seed}"
        lines.append(f"{state:<6} {label}" + (f"  ({detail})" if detail else ""))
    for key, why in skipped:
        lines.append(f"skip   {key}  ({why})")
    counts = {}
    for _, state, _ in states:
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no cells"
    return "\n".join(lines + [f"plan: {summary}" + (f", {len(skipped)} methods skipped" if skipped else "")])
