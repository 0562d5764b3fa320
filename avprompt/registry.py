"""Method registry: ``@register_method("key")`` plus discovery by scanning.

Discovery imports every module in ``avprompt.baselines`` (the repo's ``baselines/`` folder), the
DG-SCT package, the ``avprompt.methods`` entry-point group (a user's own package), and every
``*.py`` in the folders of ``AVPROMPT_METHODS_PATH`` (os.pathsep-separated). A file that fails to
import is an error naming its path; a duplicate key is an error naming both classes.
"""
from __future__ import annotations

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
        from avprompt.plugins import check_unique
        check_unique(_REGISTRY, "method", key, cls, RegistryError)
        cls.key = key
        _REGISTRY[key] = cls
        return cls
    return deco


def discover(force: bool = False) -> dict[str, type]:
    global _DISCOVERED
    if _DISCOVERED and not force:
        return _REGISTRY
    from avprompt.plugins import scan
    scan("method", "avprompt.baselines", "avprompt.methods", "AVPROMPT_METHODS_PATH", error=RegistryError,
         extra_modules=CORE_MODULES)
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
