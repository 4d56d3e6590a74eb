"""One module per COSEM interface class (`ic<class id>_<name>.py`); importing them registers them in REGISTRY."""
import importlib
import pkgutil


def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("ic"):
            importlib.import_module(f"{__name__}.{module.name}")
