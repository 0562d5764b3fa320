"""Paired comparison of one method's variants kept in separate result stores.

Variants of a method (e.g. DG-SCT's ``preset=paper`` vs ``preset=reference``) share a cell path, so
each runs into its own store (``--out``). This script pairs their cells (task, shots, seed) on the
same test videos and prints, per task and K, each variant's mean and the paired difference against
the first store with its 95% bootstrap CI (two-level over seeds and test videos; ``*`` when the CI
excludes 0). Nothing is computed that the stored per-video predictions do not hold.

    python benchmarks/compare_variants.py --method dg-sct@av paper=runs/p reference=runs/r all=runs/t
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def cells(store: Path, method: str) -> dict[tuple, str]:
    """{(task, protocol, shots, seed): json path} of ``method``'s ok cells under ``store``."""
    from avprompt.results import read_result
    out = {}
    for path in store.rglob("seed*.json"):
        rec = read_result(path)
        k = rec.get("key") or {}
        if rec.get("status") != "ok" or f"{k.get('method')}@{k.get('modality')}" != method:
            continue
        out[(k["task"], k.get("protocol", "standard"), int(k["shots"]), int(k["seed"]))] = str(path)
    return out


def paired_table(method: str, named: list[tuple[str, str]]) -> list[str]:
    """Markdown rows: per (task, K) each store's mean and each later store minus the first, with
    its two-level 95% CI (``*`` when it excludes 0). ``named``: [(name, store path), ...]."""
    from avprompt.stats import CellBootstrap, seeds_difference, seeds_interval

    found = {name: cells(Path(path), method) for name, path in named}
    ref_name = named[0][0]
    engine = CellBootstrap()
    rows = defaultdict(dict)
    for (task, protocol, shots, seed), path in found[ref_name].items():
        rows[(task, protocol, shots)][seed] = path
    out = [f"| task | K | n | {' | '.join(n for n, _ in named)} | "
           + " | ".join(f"{n} - {ref_name} (95% CI)" for n, _ in named[1:]) + " |",
           "|---|---|---|" + "---|" * len(named) + "---|" * (len(named) - 1)]
    for (task, protocol, shots), by_seed in sorted(rows.items()):
        seeds = sorted(s for s in by_seed if all((task, protocol, shots, s) in found[n] for n, _ in named))
        if not seeds:
            continue
        means, diffs = [], []
        for name, _ in named:
            iv = seeds_interval(engine, [found[name][(task, protocol, shots, s)] for s in seeds], task, protocol)
            means.append("-" if iv is None else f"{iv.value:.1f}")
        for name, _ in named[1:]:
            pairs = [(found[name][(task, protocol, shots, s)], by_seed[s]) for s in seeds]
            iv = seeds_difference(engine, pairs, task, protocol)
            diffs.append("-" if iv is None else f"{iv.value:+.1f} [{iv.lo:+.1f}, {iv.hi:+.1f}]"
                         + ("*" if not (iv.lo <= 0 <= iv.hi) else ""))
        out.append(f"| {task} | {shots} | {len(seeds)} | {' | '.join(means)} | {' | '.join(diffs)} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="dg-sct@av")
    ap.add_argument("stores", nargs="+", help="NAME=STORE; the first is the reference of the differences")
    args = ap.parse_args(argv)
    named = [s.split("=", 1) for s in args.stores]
    if any(len(n) != 2 for n in named):
        ap.error("each store is NAME=PATH")
    rows = paired_table(args.method, [tuple(n) for n in named])
    if len(rows) == 2:
        print(f"no ok cells of {args.method} in {named[0][1]}", file=sys.stderr)
        return 1
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
