"""One file per defense mode; importing this package registers every one of them.

A new mode is a new module here with a `DefenseMode` subclass that sets `name`
(docs/design.md#defense): nothing else needs editing.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
