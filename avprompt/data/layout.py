"""Where media and annotation files sit inside a dataset root, and how annotation text is read.

Media layouts recognised (first match wins, per clip):

* raw videos: ``<root>/<video_dir>/<stem>.mp4`` (AVE: ``AVE/``, LLP: ``LLP_dataset/video/``,
  VGG-Sound: ``video/``);
* the pre-extracted layout of the DG-SCT release (and the copies made from it): frames
  ``<root>/frames/<stem>/%08d.jpg`` with audio ``<root>/wave/<stem>.npy`` (32 kHz, shape
  ``(10, 32000)``). DG-SCT ships AVE as ``data/AVE/frames`` + ``data/AVE/wave`` and VGG-Sound 40K
  as ``data/vggsound/frames`` + ``data/vggsound/wave`` (so ``--root`` is ``data/AVE`` or
  ``data/vggsound``); its LLP copy is ``data/AVVP/LLP_dataset/frame/<id>/`` (singular ``frame``)
  with ``data/AVVP/LLP_dataset/wave/<id>.npy``, recognised with ``--root data/AVVP``.

A record's ``media`` is the mp4 when it exists, else the frames folder when that exists, else the
mp4 path it would have (annotation-only use never needs media).

Annotation text (every reader goes through ``read_text``): UTF-8, with or without a byte-order
mark (Excel and Windows editors add one, which used to make the first column name unreadable);
any other encoding is a one-line error naming the file and line.
"""
from __future__ import annotations

from pathlib import Path

PRE_EXTRACTED_SAMPLE_RATE = 32000  # wave/<id>.npy of the shared pre-extracted layout
#: frames folders relative to the root, each with its wave folder beside it (``../wave``)
FRAME_DIRS = ("frames", "LLP_dataset/frame")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_text(path: str | Path, what: str = "annotation file") -> str:
    """The file's text: UTF-8 with or without a BOM; other bytes raise a ValueError naming the
    file, line and byte."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                         f"{e.start}); save the {what} as UTF-8") from None


def require_rows(path: Path, rows: list, what: str,
                 fix: str = "restore the file from the dataset's release") -> None:
    """An annotation file with no data row is a truncated download or a wrong file: say so."""
    if not rows:
        raise ValueError(f"{path} is empty (no {what} rows); {fix}")


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
    """Media path for the first stem that exists in any layout (see module docstring)."""
    for stem in stems:
        mp4 = root / video_dir / f"{stem}.mp4"
        if mp4.is_file():
            return str(mp4)
    for frames in FRAME_DIRS:
        for stem in stems:
            d = root / frames / stem
            if d.is_dir():
                return str(d)
    return str(root / video_dir / f"{stems[0]}.mp4")


def pre_extracted_wave(frames_dir: Path) -> Path:
    """``<root>/frames/<stem>`` -> ``<root>/wave/<stem>.npy`` (``LLP_dataset/frame/<stem>`` ->
    ``LLP_dataset/wave/<stem>.npy``)."""
    return frames_dir.parent.parent / "wave" / f"{frames_dir.name}.npy"


def frame_files(frames_dir: Path) -> list[Path]:
    """Sorted image files of a pre-extracted frames folder."""
    return sorted(p for p in Path(frames_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
