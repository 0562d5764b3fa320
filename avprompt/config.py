"""Typed dataclass configs with flat overrides: defaults -> file (TOML/YAML) -> CLI ``key=value``."""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class TrainingConfig:
    """The optimisation fields the one training loop (``avprompt.engine.loop``) reads; method and
    head configs derive it, each carrying its reference values next to its code."""

    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # "cosine" | "multistep" | "constant"
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    epochs: int = 20
    batch_size: int = 8
    grad_clip: float = 1.0


def load_config_file(path: str | Path) -> dict:
    """Flat dict from a TOML or YAML file (one level of tables allowed for per-method overrides)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"config file {path}: use .toml, .yaml or .yml")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a BOM (Windows editors) is not part of the config
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"config file {path}:{line}: not UTF-8 text (byte "
                         f"0x{data[e.start]:02x}); save it as UTF-8") from None
    if suffix == ".toml":
        import tomllib
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:  # its message ends "(at line L, column C)"
            raise ValueError(f"config file {path}: invalid TOML: {e}") from None
    else:
        import yaml
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as e:
            # str(e) spans several lines (with a source excerpt); keep the problem and position
            mark = getattr(e, "problem_mark", None)
            where = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"config file {path}: invalid YAML: {problem}{where}") from None
        cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise ValueError(f"config file {path}: expected key = value settings at the top level, "
                         f"got a {type(cfg).__name__}")
    return cfg


def _coerce(value: Any, typ: Any, name: str):
    if isinstance(typ, str):
        typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ.split("|")[0].strip(), str)
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or value == "none":
            return None
        typ = args[0]
    if not isinstance(value, str):
        return value
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ in (int, float, str):
            return typ(value)
        if typing.get_origin(typ) in (list, tuple) or typ in (list, tuple):
            return json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
    except ValueError:
        raise ValueError(f"option {name}={value!r}: expected {getattr(typ, '__name__', typ)}") from None
    return value


def apply_overrides(cfg, overrides: dict[str, Any], where: str = "override"):
    """Return a copy of dataclass ``cfg`` with flat ``overrides`` applied (unknown keys are errors)."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes = {}
    for k, v in overrides.items():
        key = k.replace("-", "_")
        if key not in fields:
            raise ValueError(f"{where}: unknown option {k!r} for {type(cfg).__name__}; "
                             f"known: {', '.join(sorted(fields))}")
        changes[key] = _coerce(v, hints.get(key, fields[key].type), k)
    return dataclasses.replace(cfg, **changes)


def parse_kv(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        out[k.strip()] = v.strip()
    return out


def parse_method_sets(items: list[str] | None, option: str = "--set") -> dict[str, dict[str, str]]:
    """``["dg-sct.preset=reference", "coop.n_ctx=4"]`` -> ``{"dg-sct": {"preset": "reference"}, ...}``
    (method options on the command line; each method's config types the values)."""
    out: dict[str, dict[str, str]] = {}
    for key, value in parse_kv(items).items():
        method, dot, name = key.partition(".")
        if not dot or not method or not name:
            raise ValueError(f"{option} {key}={value}: expected METHOD.OPTION=VALUE, e.g. dg-sct.preset=reference")
        out.setdefault(method, {})[name] = value
    return out


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
