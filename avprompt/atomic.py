"""The one way avprompt writes a file: into a temporary file beside it (same filesystem), then
``os.replace``. A reader sees the old file or the new one, never a mix; an interrupted or failed
write leaves no temporary behind and no half-written file in place (results, caches, the SynthAV
media and the catalogs all write through here).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def _file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would give: the existing file's, else 0o666 minus the umask
    (``mkstemp`` makes its files 0o600, which would leave a shared results store unreadable to
    everyone else)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_via(path: str | os.PathLike, write: Callable[[Path], object], *, fsync: bool = False,
                     tmp: str | os.PathLike | None = None) -> Path:
    """``write(tmp_path)`` creates the file at a temporary path, which then replaces ``path``.

    The temporary is ``.<stem>.<random>.tmp`` beside ``path`` unless ``tmp`` names it (writers that
    pick a format from the name, e.g. ``x.part.mp4``; caches whose names say which host and process
    wrote them, so a stale one can be told from a live one). ``fsync``: flush it to disk first
    (result records: a crash right after must not leave an empty file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write(path: str | os.PathLike, write: Callable, *, fsync: bool = False,
                 tmp: str | os.PathLike | None = None) -> Path:
    """``write(binary_file)`` fills the file (e.g. ``lambda f: np.save(f, a)``); see ``atomic_write_via``."""
    def via(t: Path) -> None:
        with open(t, "wb") as f:
            write(f)
    return atomic_write_via(path, via, fsync=fsync, tmp=tmp)


def atomic_write_text(path: str | os.PathLike, text: str, **kw) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), **kw)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, **kw) -> Path:
    return atomic_write(path, lambda f: f.write(data), **kw)


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike):
    """Hold an exclusive inter-process lock for work that builds ``folder`` (first-use generation).

    The lock file sits beside the folder (``.<name>.lock``), so a generator that deletes and
    rebuilds the folder keeps it. A second process blocks until the first is done; callers then
    re-check their done-marker, so the set is generated once. Without ``fcntl`` (Windows) this
    is a no-op."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(folder.parent / f".{folder.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
