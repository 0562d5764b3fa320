"""The results store: one self-describing JSON file per benchmark cell.

A cell is one (suite, data, protocol, task, method, backbones, shots, seed) run. Its file lives at

    <root>/<suite>/<data>/<protocol>/<task>/<method_id>/<backbones>/shots<K>/seed<S>.json

so that experiments on other data, under another protocol or with other backbones live side by
side in one store.

where ``method_id`` is the method key, suffixed ``@<modality>`` when the cell pins a modality
(``coop@av``): the same method run on the CLIP branch, the CLAP branch and both is three cells and
three lines in the report. Path components are sanitised (anything outside ``[A-Za-z0-9._@+=-]``
becomes ``_``), so a backbone id such as ``ViT-B-32/openai`` is safe as a folder name; the
unsanitised values are kept inside the file under ``key``.

Each file carries everything needed to read it without the run that made it: status, error reason,
metrics (``metrics['primary']`` is the task's headline number; ``metrics['floor']``, when present,
is the constant-predictor score on the same split), the resolved config, class names, prompt
templates, split hash, dataset and backbone identifiers, package versions, git commit, timings,
peak memory, device and a creation time. Tables and plots (``avprompt.report``) are built only from
these files.

Resuming: a cell is reused only when it is the same experiment. Every record carries its
``identity`` (suite, task, method, modality, shots, seed, protocol, data location + annotation
fingerprint, backbone architecture + weights fingerprint, and the resolved config with its hash);
``cell_state`` compares it with the identity a sweep is about to run and answers ``new``, ``done``,
``stale`` (naming the fields that differ: the cell is rerun and its file replaced) or ``failed``
(retried: a failure is usually an environment problem, e.g. out of memory, that a rerun may not hit).

Claims (one computing sweep per cell) live in ``avprompt.cell_claims``.

Records never hold a bare ``NaN``/``Infinity`` (invalid JSON): such a value is written as null and
its path listed under ``nulls`` with the reason.

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``), so a reader or a
second writer never sees a half-written file: two processes writing the same cell leave one
complete version. This module imports no torch; versions are read from package metadata.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from avprompt.atomic import atomic_write, atomic_write_text

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed")
#: Fields of ``extra`` stored at the top level of a record; any other key goes under ``extra``.
KNOWN_EXTRA = (
    "class_names", "prompt_templates", "split_hash", "dataset", "backbone", "timings",
    "peak_memory_mb", "device", "protocol", "identity", "effective_config", "reference_changes", "warnings",
)
#: Distributions whose versions every record carries (name in the record -> distribution name).
VERSIONED_PACKAGES = {
    "torch": "torch", "open_clip": "open_clip_torch", "laion_clap": "laion_clap",
    "avprompt": "avprompt", "numpy": "numpy",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


@dataclass(frozen=True)
class CellKey:
    """Identity of one benchmark cell.

    suite: benchmark suite name (e.g. ``fewshot``); task: task name (``ave``, ``ave-cls``);
    method: registered method key; backbones: one string naming the encoder pair
    (e.g. ``ViT-B-32+HTSAT-tiny``); shots: examples per class (0 = zero-shot), or ``"full"`` (the
    whole training set: supervised tasks, stored under ``full/``); seed: split and
    initialisation seed; modality: ``""`` (method default) or ``v``/``a``/``av``; data: a short
    tag of the data location (``synthav-small-0``, ``AVE-1a2b3c4d``); protocol: ``standard`` or
    ``reference``.
    """

    suite: str
    task: str
    method: str
    backbones: str
    shots: int | str
    seed: int
    modality: str = ""
    data: str = "unspecified"
    protocol: str = "standard"

    def __post_init__(self):
        for name in ("suite", "task", "method", "backbones"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"CellKey.{name} is empty: every cell needs a {name}")
        if self.shots == FULL_SHOTS:
            return
        if int(self.shots) < 0:
            raise ValueError(f"CellKey.shots={self.shots}: use 0 for zero-shot, K>0 for K-shot")

    @property
    def method_id(self) -> str:
        """Method key plus ``@modality`` when a modality is pinned (the report's method label)."""
        return f"{self.method}@{self.modality}" if self.modality else self.method

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CellKey:
        try:
            return cls(suite=str(d["suite"]), task=str(d["task"]), method=str(d["method"]),
                       backbones=str(d["backbones"]), shots=_shots(d["shots"]), seed=int(d["seed"]),
                       modality=str(d.get("modality", "") or ""),
                       data=str(d.get("data", "unspecified") or "unspecified"),
                       protocol=str(d.get("protocol", "standard") or "standard"))
        except KeyError as e:
            raise ValueError(f"result key is missing field {e.args[0]!r}") from None


FULL_SHOTS = "full"


def _shots(value) -> int | str:
    return FULL_SHOTS if value == FULL_SHOTS else int(value)


def shots_dir(shots) -> str:
    """``shots<K>``, or ``full`` for a cell trained on the whole training set."""
    return FULL_SHOTS if shots == FULL_SHOTS else f"shots{int(shots)}"


def sanitize(component: str) -> str:
    """One safe path component: unsafe characters become ``_``; never empty, ``.`` or ``..``."""
    s = _UNSAFE.sub("_", str(component).strip())
    if s in ("", ".", ".."):
        s = s.replace(".", "_") or "_"
    return s


def result_path(root: str | os.PathLike, key: CellKey) -> Path:
    """Where the cell ``key`` is stored under ``root``."""
    return (Path(root) / sanitize(key.suite) / sanitize(key.data) / sanitize(key.protocol)
            / sanitize(key.task) / sanitize(key.method_id)
            / sanitize(key.backbones) / shots_dir(key.shots) / f"seed{int(key.seed)}.json")


# ----- provenance ---------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    """Python and package versions from installed metadata (imports nothing heavy)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name, dist in VERSIONED_PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """HEAD commit of the git repository containing ``cwd`` (default: the working directory).

    Suffixed ``-dirty`` when tracked files have uncommitted changes; None outside a repository,
    before the first commit, or when git is not installed.
    """
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if dirty else "")


def peak_memory_mb(device: str | None = None) -> float | None:
    """Peak memory of this process in MB: CUDA allocator peak on a CUDA device, else peak RSS.

    Reads torch only if the caller already imported it (this module never imports torch).
    """
    torch = sys.modules.get("torch")
    if device and str(device).startswith("cuda") and torch is not None:
        try:
            return torch.cuda.max_memory_allocated(device) / 2**20
        except Exception:  # noqa: BLE001 - a provenance field must never fail a run
            return None
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes vs KiB
    except (ImportError, OSError):
        return None


# ----- records ------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    """Fallback for json.dumps: numpy scalars/arrays, paths, dataclasses, tuples, sets."""
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a result file")


def build_result(key: CellKey, status: str, metrics: dict | None = None,
                 config: dict | None = None, extra: dict | None = None, *,
                 error: str | None = None, with_git: bool = True) -> dict:
    """Assemble one result record (not yet written).

    status: ``"ok"`` (then ``metrics['primary']`` must be a finite number) or ``"failed"`` (then
    ``error`` says why; metrics may be partial or empty). ``extra`` supplies the known provenance
    fields (``KNOWN_EXTRA``: class_names, prompt_templates, split_hash, dataset, backbone,
    timings {train_s, eval_s, wall_s}, peak_memory_mb, device, protocol); other keys are kept
    under ``record['extra']``.
    """
    if status not in STATUSES:
        raise ValueError(f"result status {status!r} for {key.method_id}: use 'ok' or 'failed'")
    metrics = dict(metrics or {})
    if status == "ok":
        p = metrics.get("primary")
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not math.isfinite(p):
            raise ValueError(f"result {key.task}/{key.method_id}/shots{key.shots}/seed{key.seed} "
                             f"has status ok but metrics['primary']={p!r}: give a finite number")
    elif not error:
        error = "unknown error (no reason recorded)"
    extra = dict(extra or {})
    timings = dict(extra.pop("timings", None) or {})
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "key": key.to_dict(),
        "method_id": key.method_id,
        "status": status,
        "error": error if status == "failed" else None,
        "metrics": metrics,
        "config": dict(config or {}),
        "class_names": list(extra.pop("class_names", None) or []),
        "prompt_templates": list(extra.pop("prompt_templates", None) or []),
        "split_hash": extra.pop("split_hash", None),
        "dataset": extra.pop("dataset", None),
        "backbone": extra.pop("backbone", None),
        "protocol": extra.pop("protocol", None),
        "versions": versions(),
        "git_commit": git_commit() if with_git else None,
        "timings": {k: timings.get(k) for k in ("train_s", "eval_s", "wall_s")} | timings,
        "peak_memory_mb": extra.pop("peak_memory_mb", None),
        "device": extra.pop("device", None),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # what a reader needs to trust the number: the experiment's identity (what a rerun
        # compares), the config that actually ran, every change from the method's reference
        # values with its reason, and every warning the cell raised
        "identity": extra.pop("identity", None),
        "effective_config": extra.pop("effective_config", None),
        "reference_changes": list(extra.pop("reference_changes", None) or []),
        "warnings": list(extra.pop("warnings", None) or []),
    }
    if extra:
        record["extra"] = extra
    return record


def _finite(obj: Any, where: str, nulls: dict) -> Any:
    """``obj`` with every NaN/Infinity replaced by None; ``nulls[path] = reason`` for each."""
    if isinstance(obj, float) and not math.isfinite(obj):
        nulls[where or "."] = f"{obj!r} (not a finite number) written as null"
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), nulls) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v, f"{where}[{i}]", nulls) for i, v in enumerate(obj)]
    return obj


def write_result(root: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` atomically to its templated path under ``root``; returns the path.

    The bytes go to a temporary file in the destination folder (same filesystem), are fsynced,
    then ``os.replace`` swaps the file in: readers see the old or the new file, never a mix.
    """
    if "key" not in record:
        raise ValueError("result record has no 'key': build it with build_result()")
    path = result_path(root, CellKey.from_dict(record["key"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(json.dumps(record, default=_jsonable))  # plain types (NaN survives here)
    nulls = {}
    record = _finite(record, "", nulls)
    if nulls:
        record["nulls"] = {**record.get("nulls", {}), **nulls}
    text = json.dumps(record, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text, fsync=True)


def predictions_path(root: str | os.PathLike, key: CellKey) -> Path:
    """``seed<S>.pred.npz`` beside the cell's JSON."""
    return result_path(root, key).with_suffix(".pred.npz")


def write_predictions(root: str | os.PathLike, key: CellKey, arrays: dict) -> Path:
    """Write a cell's per-video test predictions (numpy arrays) atomically; returns the path."""
    import numpy as np
    path = predictions_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), fsync=True)


def read_predictions(record_or_path) -> dict | None:
    """The per-video predictions of a record (dict with ``_path``, or its JSON path); None when
    the cell has none (failed, or written before predictions were stored)."""
    import numpy as np
    json_path = Path(record_or_path["_path"] if isinstance(record_or_path, dict) else record_or_path)
    path = json_path.with_suffix(".pred.npz")
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_result(path: str | os.PathLike) -> dict:
    """Parse one result file; ValueError naming the file when it is not a result record."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable result file ({e}); "
                         "delete it and rerun the cell") from e
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
        raise ValueError(f"{path}: not a result record (no 'key' object); delete or move it")
    CellKey.from_dict(record["key"])  # validates the key fields
    return record


#: JSON files a store holds beside its cells: the sweep's stamp (commit, wall time) and
#: ``avprompt explain``'s summary
NOT_CELLS = ("sweep.json", "explain.json")


def load_results(root: str | os.PathLike) -> list[dict]:
    """Every readable result under ``root`` (sorted by path), each with ``_path`` added.

    Unreadable or foreign JSON files are skipped with a warning that names them, so one broken
    file does not hide the rest of a suite.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist: run a suite first "
                                "or pass the folder that holds the result JSON files")
    out = []
    for path in sorted(root.rglob("*.json")):
        if path.name in NOT_CELLS:
            continue
        try:
            record = read_result(path)
        except ValueError as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
            continue
        record["_path"] = str(path)
        out.append(record)
    return out


def identity_hash(config: dict) -> str:
    """Short stable hash of a JSON-able dict (sorted keys)."""
    import hashlib
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=_jsonable).encode()).hexdigest()[:16]


def identity_diff(old: dict | None, new: dict) -> list[str]:
    """The identity fields that differ, as ``field: old -> new`` strings (nested dicts flattened,
    e.g. ``config.epochs: 2 -> 20``, ``backbones.weights``); [] when the two are the same."""
    if not isinstance(old, dict):
        return ["identity: none recorded (a record from an older avprompt)"]
    out = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        elif a != b:
            show = lambda v: v if len(repr(v)) <= 40 else repr(v)[:37] + "..."  # noqa: E731
            out.append(f"{where}: {show(a)} -> {show(b)}")
    # the hash summarises the config: list the config keys instead of the hash line
    walk({k: v for k, v in old.items() if k != "config_hash"}, {k: v for k, v in new.items() if k != "config_hash"}, "")
    if not out and old.get("config_hash") != new.get("config_hash"):
        out.append(f"config_hash: {old.get('config_hash')} -> {new.get('config_hash')}")
    return out


def cell_state(root: str | os.PathLike, key: CellKey, identity: dict | None = None) -> tuple[str, str]:
    """Whether the cell ``key`` must run: ("new" | "done" | "stale" | "failed", detail).

    done: a readable ok record whose identity equals ``identity`` (when given); stale: an ok record
    of another experiment (detail names the fields that differ), or an unreadable file; failed: a
    failed record (retried). A rerun computes every state but done.
    """
    path = result_path(root, key)
    if not path.is_file():
        return "new", ""
    try:
        record = read_result(path)
    except ValueError as e:
        return "stale", f"unreadable record ({str(e).split(': ', 1)[-1][:80]})"
    if record.get("status") != "ok":
        return "failed", str(record.get("error") or "")[:120]
    if CellKey.from_dict(record["key"]) != key:
        return "stale", "key differs"
    if identity is not None:
        diff = identity_diff(record.get("identity"), identity)
        if diff:
            return "stale", "; ".join(diff)
    return "done", ""


def cell_done(root: str | os.PathLike, key: CellKey, identity: dict | None = None) -> bool:
    """True when ``key`` has a readable ok result of the same experiment (a rerun skips it)."""
    return cell_state(root, key, identity)[0] == "done"
