"""Where a sweep's cells run: in this process, in local worker processes, or on Ray.

Every executor calls the same ``bench.execute_cell`` (claim, run, record atomically), so a cell's
JSON does not depend on where it ran. ``run_processes`` is the local default on a multi-core CPU:
the cells of the embedded world are small (matrices of tens to hundreds of rows), which two
threads of one process share poorly, while two processes with one thread each keep both cores
busy; the measured gain is in ``benchmarks/README.md``. Float sums may round differently with a
different thread count, so a cell rerun with another ``--jobs`` agrees to float precision, not
bit for bit.
"""
from __future__ import annotations

import os
import time
import warnings


def auto_jobs(device: str, cpu_count: int | None = None) -> int:
    """Cells at once: one per core on CPU (at most 4: memory, and more processes than cores only
    add switching); one on a GPU (a cell already fills it)."""
    if device.startswith("cuda"):
        return 1
    n = cpu_count or os.cpu_count() or 1
    return max(1, min(4, n))


def order_for_workers(plans, estimate) -> list:
    """Longest cells first (``estimate(plan)`` seconds), so no worker is left with a long tail."""
    return sorted(plans, key=lambda p: -estimate(p))


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """Watch (in a daemon thread) for the sweep's process to be gone, and then end this worker:
    a sweep killed by a signal (SIGTERM, SIGKILL) runs no clean-up, and its workers would go on
    running queued cells. A cell cut short leaves no result (results are written atomically) and
    its claim names a dead process, so the next sweep takes it over."""
    import threading

    def watch():
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc's allocator keep freed blocks of up to ``limit`` bytes for reuse (Linux, glibc).

    By default every block over 32 MB (and, after the first frees, many smaller ones) is mapped
    fresh from the kernel and unmapped when freed, so each forward pass pays a page fault per 4 KiB
    of every large activation: on this 2-core CPU an embedded DG-SCT step ran 1.2-1.4x faster and
    its evaluation 1.3-1.5x faster with freed memory kept (benchmarks/README.md). The price is a
    process that holds on to its peak memory. Returns whether the settings were taken; a no-op
    elsewhere."""
    import ctypes
    import sys
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt: M_MMAP_THRESHOLD (-3), M_TRIM_THRESHOLD (-1)
        return bool(libc.mallopt(-3, limit)) and bool(libc.mallopt(-1, limit))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False


BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_native_threads(threads: int) -> None:
    """``threads`` for torch and for the BLAS/OpenMP pools of numpy, scipy and scikit-learn in
    this process: those loaded already (threadpoolctl) and those loaded later (the variables,
    unless the user set them). By default each pool takes every core, so two worker processes
    on 2 cores ran four spinning BLAS threads: the default sweep's linear-probe, Tip-Adapter-F
    and CLIP-Adapter cells took 2.6 min instead of 1.6, with the same results."""
    import torch
    torch.set_num_threads(threads)
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it the variables still apply to later loads
        return
    threadpool_limits(limits=threads)


def _init_worker(threads: int, parent: int | None = None) -> None:
    limit_native_threads(threads)
    keep_freed_memory()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if parent is not None:
        _exit_with_parent(parent)


def _run_one(cfg, plan):
    from avprompt.bench import execute_cell
    return execute_cell(cfg, plan, show_progress=False)


def run_processes(cfg, todo, jobs: int, echo=print) -> list[dict]:
    """Run ``todo`` on ``jobs`` spawned worker processes, ``cores // jobs`` torch threads each.

    Returns the outcomes in completion order. A ``StoreWriteError`` in a worker stops the sweep
    (finished cells stay written); Ctrl-C cancels the cells not yet started."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from avprompt.bench import estimate_one
    from avprompt.progress import progress

    threads = max(1, (os.cpu_count() or 1) // jobs)
    plans = order_for_workers(todo, estimate_one)
    out = []
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads, os.getpid()))
    try:
        pending = {pool.submit(_run_one, cfg, p): p for p in plans}
        with progress(total=len(pending), desc=f"cells ({jobs} processes)", unit="cell",
                      work=[estimate_one(p) for p in plans]) as bar:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    p = pending.pop(fut)
                    out.append(fut.result())
                    bar.set_postfix_str(f"{p.task} {p.method}@{p.modality} K={p.shots} s={p.seed}")
                    bar.update(1, work=estimate_one(p))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out


def run_ray(cfg, todo, echo=print) -> list[dict]:
    """Each cell is a Ray task (1 CPU, or 1 GPU when the device is cuda) writing to the store."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs ray: pip install 'avprompt[ray]'") from None
    from avprompt.bench import execute_cell

    started = False
    if not ray.is_initialized():
        ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False)
        started = True
    gpus = 1 if cfg.device.startswith("cuda") else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus)(execute_cell)
    try:
        refs = [remote.remote(cfg, p, False) for p in todo]
        from avprompt.progress import progress
        out = []
        with progress(total=len(refs), desc="cells (ray)", unit="cell") as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                out += ray.get(done)
                bar.update(len(done))
        return out
    finally:
        if started:
            ray.shutdown()


def warm_feature_cache(ws, todo) -> None:
    """Encode, in this process, the clips the cached-feature cells of ``todo`` will read (their
    splits' train, validation and test clips), so parallel workers only read the cache instead of
    each encoding the same clips at the same time."""
    from avprompt.data.splits import make_split
    from avprompt.registry import get_method

    needed: dict[str, tuple[set, set]] = {}
    for p in todo:
        if get_method(p.method).runs_on != "features":
            continue
        mods, ids = needed.setdefault(p.task, (set(), set()))
        mods.update(m for m in ("v", "a") if m in p.modality)
        with warnings.catch_warnings():  # split notes (a class short of K) are the cell's to record
            warnings.simplefilter("ignore")
            split = make_split(ws.index(p.task), p.task, p.protocol, shots=p.shots, seed=p.seed)
        ids.update(split.train, split.val, split.test)
    for task, (mods, ids) in needed.items():
        bad = ws.bad_clips(task)
        records = [r for r in ws.index(task).records if r.clip_id in ids and r.clip_id not in bad]
        for m in sorted(mods):
            if records:
                ws.features(task, m, records)
