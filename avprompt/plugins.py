"""Discovery of drop-in files: one scanning rule for every kind of plugin (methods, tasks, heads,
example sources).

``scan(kind, package, group, env_var)`` imports every public module of ``package`` (a folder of the
repo), every entry point of ``group`` (a user's installed package) and every ``*.py`` in the
folders of the environment variable ``env_var`` (os.pathsep-separated). Importing a file runs its
``register_*`` call. A file that fails to import is one error (``error``, default ``PluginError``)
naming its path; errors the registry itself raises (a duplicate key) pass through unchanged.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path


class PluginError(RuntimeError):
    pass


def check_unique(registry: dict, kind: str, key: str, cls: type, error: type = PluginError) -> None:
    """A key registered again by ANOTHER class is an error naming both (a re-import is not)."""
    prev = registry.get(key)
    if prev is not None and f"{prev.__module__}.{prev.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
        raise error(f"duplicate {kind} key {key!r}: {prev.__module__}.{prev.__qualname__} and "
                    f"{cls.__module__}.{cls.__qualname__}; rename one")


def import_module(kind: str, name: str, path, error: type = PluginError) -> None:
    try:
        importlib.import_module(name)
    except error:
        raise
    except Exception as e:  # report the file, not a traceback deep in the import system
        raise error(f"{kind} file {path} failed to import: {type(e).__name__}: {e}") from e


def import_file(kind: str, path: Path, error: type = PluginError) -> None:
    """Import one user file (once per path) as ``avprompt_user_<kind>s.<stem>``."""
    name = f"avprompt_user_{kind}s.{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except error:
        del sys.modules[name]
        raise
    except Exception as e:
        del sys.modules[name]
        raise error(f"{kind} file {path} failed to import: {type(e).__name__}: {e}") from e


def scan(kind: str, package: str, group: str, env_var: str, error: type = PluginError,
         extra_modules: tuple[str, ...] = ()) -> None:
    """Import every drop-in ``kind`` file: the package's modules, ``extra_modules``, the entry
    points of ``group``, the ``*.py`` files of the ``$env_var`` folders."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            import_module(kind, f"{package}.{info.name}", Path(pkg.__path__[0]) / f"{info.name}.py", error)
    for mod in extra_modules:
        if importlib.util.find_spec(mod) is not None:
            import_module(kind, mod, mod, error)
    for ep in entry_points(group=group):
        try:
            ep.load()
        except error:
            raise
        except Exception as e:
            raise error(f"entry point {ep.name} = {ep.value} ({group}) failed to load: {e}") from e
    for folder in filter(None, os.environ.get(env_var, "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            import_file(kind, path, error)


class ClassRegistry:
    """Key -> class for one kind of drop-in class (task heads, example sources): the
    ``@register(key)`` decorator (base-class check, the kind's own ``check``, duplicate keys), lazy
    discovery by ``scan`` and ``get`` with a one-line error naming what is registered."""

    def __init__(self, kind: str, base: type, package: str, group: str, env_var: str, check=None):
        self.kind, self.base, self.check = kind, base, check
        self._scan = (package, group, env_var)
        self.classes: dict[str, type] = {}
        self._discovered = False

    def register(self, key: str):
        def deco(cls):
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise PluginError(f"{self.kind} {key!r}: {cls!r} does not derive "
                                  f"{self.base.__module__}.{self.base.__qualname__}")
            if self.check is not None:
                self.check(key, cls)
            check_unique(self.classes, self.kind, key, cls, PluginError)
            cls.key = key
            self.classes[key] = cls
            return cls
        return deco

    def discover(self, force: bool = False) -> dict[str, type]:
        if not self._discovered or force:
            scan(self.kind, *self._scan)
            self._discovered = True
        return self.classes

    def get(self, key: str) -> type:
        reg = self.discover()
        if key not in reg:
            raise ValueError(f"unknown {self.kind} {key!r}; registered: {', '.join(sorted(reg))}")
        return reg[key]
