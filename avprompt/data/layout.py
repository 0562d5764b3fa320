"""Where media and annotation files sit inside a dataset root.

Two media layouts are recognised for every dataset:

* raw videos: ``<root>/<video_dir>/<stem>.mp4`` (AVE: ``AVE/``, LLP: ``LLP_dataset/video/``,
  VGG-Sound: ``video/``);
* the widely shared pre-extracted layout: ``<root>/frames/<stem>/%08d.jpg`` plus
  ``<root>/wave/<stem>.npy`` (32 kHz, shape ``(10, 32000)``).

A record's ``media`` is the mp4 when it exists, else the frames folder when that exists, else the
mp4 path it would have (annotation-only use never needs media).
"""
from __future__ import annotations

from pathlib import Path

PRE_EXTRACTED_SAMPLE_RATE = 32000  # wave/<id>.npy of the shared pre-extracted layout


def find_file(root: Path, names: list[str], subdirs: tuple[str, ...] = ("",)) -> Path | None:
    """First existing ``root/<subdir>/<name>`` over subdirs x names, or None."""
    for sub in subdirs:
        for name in names:
            p = root / sub / name if sub else root / name
            if p.is_file():
                return p
    return None


def require_file(root: Path, names: list[str], what: str,
                 subdirs: tuple[str, ...] = ("",)) -> Path:
    p = find_file(root, names, subdirs)
    if p is None:
        raise FileNotFoundError(
            f"{root}: no {' / '.join(names)} found ({what}); point --root at the dataset folder")
    return p


def resolve_media(root: Path, video_dir: str, stems: list[str]) -> str:
    """Media path for the first stem that exists in either layout (see module docstring)."""
    for stem in stems:
        mp4 = root / video_dir / f"{stem}.mp4"
        if mp4.is_file():
            return str(mp4)
    for stem in stems:
        frames = root / "frames" / stem
        if frames.is_dir():
            return str(frames)
    return str(root / video_dir / f"{stems[0]}.mp4")


def pre_extracted_wave(frames_dir: Path) -> Path:
    """``<root>/frames/<stem>`` -> ``<root>/wave/<stem>.npy``."""
    return frames_dir.parent.parent / "wave" / f"{frames_dir.name}.npy"
