"""Weight files: reading them into towers with one-line errors, and fingerprinting them.

A weight file in ``--backbones`` (``clip=ARCH@FILE``) is a ``.safetensors`` file or anything
``torch.load`` reads: a state dict, ``{"state_dict": ...}`` / ``{"model": ...}`` (laion-clap and
training scripts), keys optionally prefixed ``module.`` (DDP). Whatever else a file holds (a bare
tensor, random bytes, a truncated download, a dict of non-tensors, keys of another architecture)
is a ``ValueError`` naming the file and what to do, never a traceback from deep inside torch.

Fingerprints identify weights in results: ``sha256:<16 hex>`` of the file's bytes (the shipped
SynthAV assets included), cached per (path, size, mtime) so a sweep hashes each file once;
``random-init:seed0`` for towers without weights (``load_encoders`` seeds 0, so the same
architecture gives the same weights everywhere); ``open_clip-pretrained:<tag>`` for open_clip tags.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

RANDOM_INIT_SEED = 0  # the seed load_encoders builds weightless towers with
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")  # where checkpoints nest the weights
_HASHES: dict[tuple[str, int, int], str] = {}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def _describe(obj) -> str:
    import torch
    if isinstance(obj, torch.Tensor):
        return f"bare tensor of shape {tuple(obj.shape)}"
    return f"{type(obj).__module__}.{type(obj).__qualname__}".removeprefix("builtins.")


def load_state(path: str) -> dict:
    """The ``{name: tensor}`` state of a weight file (``module.`` prefixes removed)."""
    import torch

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"weights file {path} does not exist: check the path in --backbones")
    if p.is_dir():
        raise ValueError(f"weights file {path} is a folder: name the checkpoint file inside it in --backbones")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except Exception as e:  # SafetensorError, OSError: truncated / not safetensors at all
            raise ValueError(f"weights file {path} is not a readable safetensors file ({_first_line(e)}): "
                             "re-download it or re-export it with safetensors.torch.save_file") from None
    try:
        # weights_only=False: laion-clap checkpoints pickle optimizer state and numpy scalars.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # UnpicklingError, EOFError, RuntimeError on random bytes / truncation
        raise ValueError(f"weights file {path} is not a checkpoint torch.load can read ({_first_line(e)}): "
                         "re-download it, or save weights with torch.save(model.state_dict(), FILE)") from None
    if isinstance(ckpt, torch.nn.Module):  # a pickled / TorchScript model: take its weights
        ckpt = ckpt.state_dict()
    state = ckpt
    if isinstance(ckpt, dict):
        state = next((ckpt[k] for k in STATE_DICT_KEYS if isinstance(ckpt.get(k), dict)), ckpt)
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} holds a {_describe(state)}, not a state dict: save the "
                         "weights with torch.save(model.state_dict(), FILE)")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not state or bad:
        what = "an empty dict" if not state else f"non-tensor entries (e.g. {bad[:3]})"
        raise ValueError(f"weights file {path} holds {what}, not a state dict of tensors: save "
                         f"model.state_dict(), or nest it under one of {'/'.join(STATE_DICT_KEYS)}")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def load_into(model, state: dict, arch: str, path: str, ignore: tuple[str, ...] = ()) -> None:
    """Strict load; a wrong pairing of weights and architecture is one clear error."""
    own = model.state_dict()
    skip = ignore or ("\0",)
    missing = [k for k in own if k not in state and not k.endswith(skip)]
    unexpected = [k for k in state if k not in own and not k.endswith(skip)]
    badshape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or badshape:
        detail = (f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:2]}), {len(badshape)} with other shapes (e.g. {badshape[:2]})")
        raise ValueError(f"weights {path} do not fit architecture {arch}: {detail}; "
                         "pick the architecture these weights were trained with")
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    except RuntimeError as e:  # e.g. a dtype torch cannot copy into the parameter
        raise ValueError(f"weights {path} could not be copied into architecture {arch} "
                         f"({_first_line(e)}): re-export them as float tensors") from None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, cached per (real path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def weights_fingerprint(weights: str | None, seeded: bool = True) -> str:
    """Short stable identity of one tower's weights (see the module docstring).

    ``seeded=False`` for towers not built by ``load_encoders`` (their random init is unknown)."""
    if weights is None:
        return f"random-init:seed{RANDOM_INIT_SEED}" if seeded else "random-init:unknown"
    if os.path.isfile(weights):
        return "sha256:" + file_sha256(weights)[:16]
    return f"open_clip-pretrained:{weights}"
