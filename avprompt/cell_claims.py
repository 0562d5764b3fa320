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


def _create_with(path: Path, text: str) -> None:
    """Create ``path`` holding ``text`` in one step, or raise FileExistsError.

    The claim is written to a private file and hard-linked into place, so no other sweep ever
    reads a claim that exists but is still empty: one created with ``O_EXCL`` and then written
    could be read in between as unreadable, taken for stale and taken over (both sweeps then
    computed the cell). Where hard links are unavailable, ``O_EXCL`` then write."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system
        pass
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def claim_cell(root: str | os.PathLike, key: CellKey) -> dict | None:
    """Claim ``key`` for this process. Returns None on success, else the live owner's claim.

    The claim file is created exclusively, content included (``_create_with``); a stale claim (dead owner on this host, or
    older than ``CLAIM_TTL_S``) is removed and the claim retried once. Temporary files a killed
    writer left for this cell are removed once the claim is ours (nobody else writes the cell).
    """
    path = claim_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": platform.node(), "time": _dt.datetime.now().timestamp()}
    for _ in range(2):
        try:
            _create_with(path, json.dumps(me))
        except FileExistsError:
            owner = claim_owner(root, key)
            if owner is not None:
                return owner
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        stem = result_path(root, key).stem
        for tmp in path.parent.glob(f".{stem}.*.tmp"):
            tmp.unlink(missing_ok=True)
        return None
    return claim_owner(root, key) or {"pid": "?", "host": "?"}


def release_cell(root: str | os.PathLike, key: CellKey) -> None:
    claim_path(root, key).unlink(missing_ok=True)
