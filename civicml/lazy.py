"""Package faces that import a module when one of its names is first used (PEP 562).

A command that needs one light function of a package (``civicml models list`` needs
:func:`registry.models`) should not import every library the package's other modules
use (scikit-learn, Paddle, Optuna): a package's ``__init__`` keeps its public names but
lists them with the module each comes from::

    __getattr__, __dir__ = lazy_face(__name__, {"tuning.study": ("StudyResult", "tune"), ...})

``from tuning import tune`` and ``tuning.tune`` work as before: the first use imports
``tuning.study`` and keeps the name in the package's namespace, so later uses are plain
attribute reads. A name not in the table is an ``AttributeError`` as always; a submodule is
still reached by importing it (``import registry.rules``). The same names are imported under
``TYPE_CHECKING`` in each face, for readers and type checkers, and tests/test_startup.py checks
that every name in ``__all__`` resolves to its module's object.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_face(package: str, modules: Mapping[str, tuple[str, ...]]) -> tuple[Callable[[str], Any],
                                                                           Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, whose names ``modules`` lists
    (module -> names it gives)."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__


def optional(module: str, extra: str):
    """Import ``module`` from an install extra (``pip install 'civicml[extra]'``), or say which extra is missing:
    a serving replica installs the base only."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        from civicml.errors import InvalidInput

        raise InvalidInput(f"this needs the '{extra}' extra ({module} is not installed): "
                           f"pip install 'civicml[{extra}]'") from None
