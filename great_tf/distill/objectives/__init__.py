"""One file per distillation objective; importing this package registers every one of them.

A new objective is a new module here with a `Distiller` subclass that sets `method`
(docs/design.md#distillation): nothing else needs editing.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
