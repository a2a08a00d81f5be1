"""One file per multi-task method; importing this package registers every one of them.

A new method is a new module here holding a `MultiTaskModel` subclass with `method = "name"`
(docs/design.md#mtl-methods): nothing else needs editing.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
