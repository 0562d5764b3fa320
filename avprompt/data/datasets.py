"""One entry point for every dataset: ``load_dataset("ave" | "llp" | "vggsound" | "vggsound40k" |
"manifest:FILE", root)``.

``root`` is the dataset folder holding the annotation files (and media, when present); a
manifest path is taken as given, or relative to ``root`` when it does not exist as given.
Record media paths are absolute (``root`` is made absolute first), so they keep pointing at the
files when the working directory changes or the records are written to a manifest.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from avprompt.data.ave import read_ave
from avprompt.data.llp import read_llp
from avprompt.data.manifest import export_manifest, read_manifest
from avprompt.data.records import DatasetIndex
from avprompt.data.vggsound import read_vggsound, read_vggsound40k

READERS: dict[str, Callable[[Path], DatasetIndex]] = {
    "ave": read_ave,
    "llp": read_llp,
    "vggsound": read_vggsound,
    "vggsound40k": read_vggsound40k,
}

__all__ = ["READERS", "load_dataset", "export_manifest"]


def load_dataset(name_or_spec: str, root: str | Path | None = None) -> DatasetIndex:
    """Read a dataset's annotations into a ``DatasetIndex`` (media need not exist)."""
    spec = name_or_spec.strip()
    if spec.lower().startswith("manifest:"):
        path = Path(spec.split(":", 1)[1])
        if not path.is_file() and root is not None and (Path(root) / path).is_file():
            path = Path(root) / path
        return read_manifest(path)
    key = spec.lower()
    if key not in READERS:
        raise ValueError(f"unknown dataset {name_or_spec!r}; use one of "
                         f"{', '.join(READERS)} or manifest:FILE")
    if root is None:
        raise ValueError(f"dataset {key!r} needs --root DIR (the folder with its annotation files)")
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; pass --root DIR")
    return READERS[key](root)
