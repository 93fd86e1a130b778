"""Lazy re-exports for a package's ``__init__.py`` (PEP 562), so importing a package costs only
what its cheap names need: ``from bonmf_pipe.trainer import TrainSettings`` does not import torch,
``from bonmf_pipe.trainer import train`` imports it then.

A package declares which public names live in which of its modules and hands the result to
``exports``::

    __all__ = [...]
    __getattr__, __dir__ = lazy.exports(__name__, {"train": "train", "Scorer": "scorer", ...})

A name is imported from its module the first time it is asked for, and then kept as a plain
attribute of the package. Where a name is also the name of the module that defines it (the
function ``train`` in the module ``train``), the import system would otherwise leave the
*module* under that name once someone imports the module directly; ``exports`` keeps the
exported object there instead, as an eager ``from .train import train`` in ``__init__.py``
did before.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable


def exports(package: str, where: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of package ``package`` whose public names
    ``where`` maps to the submodule that defines each (``"train"``), or to the submodule and the
    name there (``"distributed:session"``)."""
    module = sys.modules[package]
    full = {name: (f"{package}.{mod.partition(':')[0]}", mod.partition(":")[2] or name) for name, mod in where.items()}
    shadowed = {name for name, (mod, attr) in full.items() if mod == f"{package}.{name}" and attr == name}
    if shadowed:
        module.__class__ = type("LazyPackage", (_LazyPackage,), {"_shadowed": frozenset(shadowed)})

    def __getattr__(name: str) -> object:
        if name not in full:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        mod, attr = full[name]
        value = getattr(importlib.import_module(mod), attr)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(module.__dict__) | set(full))

    return __getattr__, __dir__


class _LazyPackage(types.ModuleType):
    """A package whose exported name ``x`` is defined by its own submodule ``x``: when the import
    system binds the loaded submodule to the package, the exported object is bound instead."""

    _shadowed: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: object) -> None:
        if name in self._shadowed and isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)
