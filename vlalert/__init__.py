"""VLAlert: a file-tracked pipeline from public dashcam datasets to tick-level driver alerts.

`from vlalert import Alerter` is the Python API of a trained run (vlalert.alerter). It is imported
on first use, so `import vlalert` (which every stage may do, for `__version__`) and `vlalert --help`
stay light, and the package root depends on no stage at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Alerter", "__version__"]

# Attributes loaded on first access: name -> module. Not an import of the package root: a stage that
# imports `vlalert` for `__version__` never loads these (tests/test_imports.py sees no edge to them).
_LAZY = {"Alerter": "vlalert.alerter"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlalert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
