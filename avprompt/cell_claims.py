"""Cell claims: one computing sweep per result cell.

A sweep claims a cell before computing it (``<seedS>.claim`` beside the cell's JSON, holding the
owner's pid, host and start time) and releases it after writing the record, so two sweeps sharing
one store never compute the same cell twice; a claim whose owner died (same host, pid gone) or that
is older than ``CLAIM_TTL_S`` is taken over. No torch import.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

from avprompt.results import CellKey, result_path

CLAIM_TTL_S = float(os.environ.get("AVPROMPT_CLAIM_TTL_S", 24 * 3600))


def claim_path(root: str | os.PathLike, key: CellKey) -> Path:
    return result_path(root, key).with_suffix(".claim")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, not ours
        return True
    return True


def claim_owner(root: str | os.PathLike, key: CellKey) -> dict | None:
    """The live claim on ``key`` ({pid, host, started}) or None (no claim, or a stale one)."""
    path = claim_path(root, key)
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        started = float(owner.get("time", 0))
    except (OSError, ValueError, AttributeError):
        return None
    if owner.get("host") == platform.node() and not pid_alive(int(owner.get("pid", -1))):
        return None
    if _dt.datetime.now().timestamp() - started > CLAIM_TTL_S:
        return None
    return owner


def claim_cell(root: str | os.PathLike, key: CellKey) -> dict | None:
    """Claim ``key`` for this process. Returns None on success, else the live owner's claim.

    The claim file is created exclusively (``O_EXCL``); a stale claim (dead owner on this host, or
    older than ``CLAIM_TTL_S``) is removed and the claim retried once. Temporary files a killed
    writer left for this cell are removed once the claim is ours (nobody else writes the cell).
    """
    path = claim_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": platform.node(), "time": _dt.datetime.now().timestamp()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = claim_owner(root, key)
            if owner is not None:
                return owner
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        stem = result_path(root, key).stem
        for tmp in path.parent.glob(f".{stem}.*.tmp"):
            tmp.unlink(missing_ok=True)
        return None
    return claim_owner(root, key) or {"pid": "?", "host": "?"}


def release_cell(root: str | os.PathLike, key: CellKey) -> None:
    claim_path(root, key).unlink(missing_ok=True)
