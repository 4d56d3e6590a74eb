"""Start of the legal process: run only what is hashed, record what the platform loads.

The legal process is a fresh interpreter (`-I -S -B`: no environment, no site hooks, no
bytecode written) whose first code is a stub in process.py. The stub reads THIS file, compiles
and runs it from those bytes, and calls `main`, which:

1. installs a path hook that hashes every file the import system reads for the platform
   (stdlib and third-party sources or the `.pyc` actually used, extension modules), so the
   platform identification covers exactly what was executed (legal/platform.py);
2. installs a meta-path finder for `smartmeter` and `smartmeter.legal.*` that reads each
   module's source, records its SHA-256 in `identification.LOADED_SOURCES` and compiles
   those very bytes in memory. No `.pyc` of legal/ is read or written, so a stale or
   altered `__pycache__` cannot run; `identification.check_software` compares the recorded
   hashes with the signed manifest. `smartmeter/__init__.py` (application code) is not
   executed: the package is an empty shell, and any other `smartmeter.*` import is refused
   (the import contract says legal/ needs none);
3. imports legal/process.py that way and serves the pipe (or answers `identify`).
"""
import hashlib
import sys
from importlib.machinery import (
    BYTECODE_SUFFIXES, EXTENSION_SUFFIXES, SOURCE_SUFFIXES, ExtensionFileLoader, FileFinder, ModuleSpec,
    SourceFileLoader, SourcelessFileLoader,
)

PACKAGE = "smartmeter"
LEGAL = "smartmeter.legal"

# path -> SHA-256 hex of the bytes the import system read (sources, .pyc) or loaded (extensions)
PLATFORM_FILES: dict[str, str] = {}
# path relative to legal/ -> SHA-256 hex of the source bytes compiled
LEGAL_SOURCES: dict[str, str] = {}


class _RecordingSourceLoader(SourceFileLoader):
    def get_data(self, path):
        data = super().get_data(path)
        PLATFORM_FILES[path] = hashlib.sha256(data).hexdigest()
        return data


class _RecordingSourcelessLoader(SourcelessFileLoader):
    def get_data(self, path):
        data = super().get_data(path)
        PLATFORM_FILES[path] = hashlib.sha256(data).hexdigest()
        return data


class _RecordingExtensionLoader(ExtensionFileLoader):
    def create_module(self, spec):
        with open(self.path, "rb") as f:
            PLATFORM_FILES[self.path] = hashlib.sha256(f.read()).hexdigest()
        return super().create_module(spec)


class _Shell:
    """Loader of the `smartmeter` package without running its __init__.py."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        pass


class _VerifiedSourceLoader:
    def __init__(self, path: str, relative: str) -> None:
        self.path, self.relative = path, relative

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        with open(self.path, "rb") as f:
            source = f.read()
        LEGAL_SOURCES[self.relative] = hashlib.sha256(source).hexdigest()
        code = compile(source, self.path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
        if module.__name__ == LEGAL + ".identification":
            module.LOADED_SOURCES = LEGAL_SOURCES  # the same dict: later modules are added to it


class _LegalFinder:
    def __init__(self, legal_dir: str) -> None:
        self.legal_dir = legal_dir.rstrip("/")

    def find_spec(self, name, path=None, target=None):
        if name == PACKAGE:
            spec = ModuleSpec(name, _Shell(), is_package=True)
            spec.submodule_search_locations = [self.legal_dir.rsplit("/", 1)[0]]
            return spec
        if name != LEGAL and not name.startswith(LEGAL + "."):
            if name.startswith(PACKAGE + "."):
                raise ImportError(f"{name}: the legal process imports nothing outside smartmeter.legal")
            return None
        parts = name.split(".")[2:]
        import os

        base = os.path.join(self.legal_dir, *parts)
        if os.path.isdir(base):
            file, relative, package = os.path.join(base, "__init__.py"), "/".join([*parts, "__init__.py"]), True
        else:
            file, relative, package = base + ".py", "/".join(parts) + ".py", False
        if not os.path.isfile(file):
            return None
        spec = ModuleSpec(name, _VerifiedSourceLoader(file, relative), origin=file, is_package=package)
        spec.has_location = True
        if package:
            spec.submodule_search_locations = [base]
        return spec


def install(legal_dir: str, own_source: bytes) -> None:
    sys.dont_write_bytecode = True
    sys.path_hooks.insert(0, FileFinder.path_hook(
        (_RecordingExtensionLoader, EXTENSION_SUFFIXES), (_RecordingSourceLoader, SOURCE_SUFFIXES),
        (_RecordingSourcelessLoader, BYTECODE_SUFFIXES)))
    sys.path_importer_cache.clear()
    sys.meta_path.insert(0, _LegalFinder(legal_dir))
    LEGAL_SOURCES["loader.py"] = hashlib.sha256(own_source).hexdigest()


def main(args: dict, own_source: bytes) -> None:
    install(args["legal"], own_source)
    from smartmeter.legal import interface, platform, process  # noqa: F401 - every module of the part, compiled here

    platform.freeze(PLATFORM_FILES)  # the platform as loaded now: fixed for this process's life
    if args.get("mode") == "identify":
        process.answer_identify(args["fd"], args.get("application_version", ""))
    else:
        process.serve_fd(args["fd"], args["data_dir"], args["options"])
