"""Method registry: ``@register_method("key")`` plus discovery by scanning.

Discovery imports every module in ``avprompt.baselines`` (the repo's ``baselines/`` folder), the
DG-SCT package, the ``avprompt.methods`` entry-point group (a user's own package), and every
``*.py`` in the folders of ``AVPROMPT_METHODS_PATH`` (os.pathsep-separated). A file that fails to
import is an error naming its path; a duplicate key is an error naming both classes.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path

_REGISTRY: dict[str, type] = {}
_DISCOVERED = False
CORE_MODULES = ("avprompt.dgsct.method",)


class RegistryError(RuntimeError):
    pass


def register_method(key: str):
    """Class decorator: register a ``Method`` subclass under a kebab-case key.

    Checks the class's declared ``kind`` / ``runs_on`` (``avprompt.method.check_declaration``)."""
    def deco(cls):
        from avprompt.method import check_declaration
        try:
            check_declaration(cls)
        except ValueError as e:
            raise RegistryError(f"method {key!r}: {e}") from None
        prev = _REGISTRY.get(key)
        if prev is not None and f"{prev.__module__}.{prev.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
            raise RegistryError(f"duplicate method key {key!r}: {prev.__module__}.{prev.__qualname__} "
                                f"and {cls.__module__}.{cls.__qualname__}; rename one")
        cls.key = key
        _REGISTRY[key] = cls
        return cls
    return deco


def _import(name: str, path: str | os.PathLike) -> None:
    try:
        importlib.import_module(name)
    except RegistryError:
        raise
    except Exception as e:  # report the file, not a bare traceback deep in the import system
        raise RegistryError(f"method file {path} failed to import: {type(e).__name__}: {e}") from e


def _import_file(path: Path) -> None:
    name = f"avprompt_user_methods.{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except RegistryError:
        raise
    except Exception as e:
        del sys.modules[name]
        raise RegistryError(f"method file {path} failed to import: {type(e).__name__}: {e}") from e


def discover(force: bool = False) -> dict[str, type]:
    global _DISCOVERED
    if _DISCOVERED and not force:
        return _REGISTRY
    import avprompt.baselines as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            _import(f"avprompt.baselines.{info.name}", Path(pkg.__path__[0]) / f"{info.name}.py")
    for mod in CORE_MODULES:
        if importlib.util.find_spec(mod) is not None:
            _import(mod, mod)
    for ep in entry_points(group="avprompt.methods"):
        try:
            ep.load()
        except Exception as e:
            raise RegistryError(f"entry point {ep.name} = {ep.value} failed to load: {e}") from e
    for folder in filter(None, os.environ.get("AVPROMPT_METHODS_PATH", "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            _import_file(path)
    _DISCOVERED = True
    return _REGISTRY


def list_methods(pattern: str = "*") -> list[str]:
    from fnmatch import fnmatch
    return sorted(k for k in discover() if fnmatch(k, pattern))


def get_method(key: str) -> type:
    reg = discover()
    if key not in reg:
        raise KeyError(f"unknown method {key!r}; registered: {', '.join(sorted(reg))}")
    return reg[key]
