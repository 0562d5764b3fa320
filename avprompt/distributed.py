"""Pre-training under ``torchrun`` with DistributedDataParallel (NCCL on GPUs, gloo on CPU).

    torchrun --nproc_per_node 2 -m avprompt.distributed --method coop --out ckpt.pt [--backbones ...]

Every rank builds the same workspace and split; each batch is sharded across ranks by the shared
loop (``engine.loop``), DDP averages the gradients, rank 0 writes the checkpoint and a JSON with
the training history. Without torchrun it runs as a single process (the reference the test
compares against).
"""
from __future__ import annotations

import argparse
import json
import os


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="avprompt.distributed")
    ap.add_argument("--method", required=True)
    ap.add_argument("--modality", default=None)
    ap.add_argument("--task", default="vggsound40k")
    ap.add_argument("--data", default="synthav")
    ap.add_argument("--synth-size", default="small")
    ap.add_argument("--backbones", default="synthav")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="method overrides key=value")
    ap.add_argument("--out", required=True, help="checkpoint path (.pt); history goes beside it")
    args = ap.parse_args(argv)

    import torch
    import torch.distributed as dist

    from avprompt.config import parse_kv
    from avprompt.engine.cell import CellPlan, run_cell
    from avprompt.engine.workspace import Workspace
    from avprompt.registry import get_method

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    rank = dist.get_rank() if distributed else 0
    try:
        ws = Workspace(args.data, args.backbones, "cuda" if torch.cuda.is_available() else "cpu",
                       synth_size=args.synth_size)
        cls = get_method(args.method)
        plan = CellPlan(args.task, args.method, args.modality or cls.default_config().modality, None,
                        args.seed, overrides=parse_kv(args.set), max_epochs=args.epochs)
        out = run_cell(ws, plan)
        if rank == 0:
            method = out.pop("method_obj")
            state = {k: v for k, v in method.state_dict().items() if not k.startswith("encoders.")}
            torch.save(state, args.out)
            with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
                json.dump({"metrics": out["metrics"], "history": out["extra"]["history"],
                           "world_size": dist.get_world_size() if distributed else 1}, f, indent=1, default=str)
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
