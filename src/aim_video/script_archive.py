"""The tensors of a TorchScript archive (OpenAI's `ViT-B-16.pt`), read without running its code.

`torch.jit.load` compiles the archive's `code/` and runs any `__setstate__` it defines, and
`torch.load(weights_only=True)` does not read these archives at all. But a module's pickled
state (`data.pkl`) is plain: `__torch__.*` objects whose attributes are tensors, submodules and
scalars. Here it is unpickled with a closed list of globals: each `__torch__` class becomes an
inert record of its attributes, tensors are rebuilt from the archive's `data/N` storages, and
anything else (a class rebuilt by its own code, a custom C++ class, any other import) stops the
read with `UnsafeArchive`, naming what it needed.
"""

from __future__ import annotations

import pickle
import pickletools
import posixpath
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import torch

# Legacy typed storage names, as the pickle names them ("torch HalfStorage") -> dtype.
_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64, "BFloat16Storage": torch.bfloat16,
    "ByteStorage": torch.uint8, "CharStorage": torch.int8, "ShortStorage": torch.int16,
    "IntStorage": torch.int32, "LongStorage": torch.int64, "BoolStorage": torch.bool,
}


class UnsafeArchive(Exception):
    """The archive's state cannot be read without running code (or is not a module's state)."""


class _ScriptObject:
    """Stands in for a TorchScript class: keeps the pickled attributes, runs nothing."""

    qualified_name = "__torch__"

    def __setstate__(self, state: object) -> None:
        # TorchScript pickles a module's attributes as a dict; any other state is what the
        # class's own __getstate__ made, and only its __setstate__ code can rebuild it.
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise UnsafeArchive(
                f"{self.qualified_name} is rebuilt by its own __setstate__ code"
            )
        self.attributes = state


def _rebuild_tensor(
    storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_unused: object
) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2` without hooks or metadata: a view of `storage`."""
    return torch.empty(0, dtype=storage.dtype).set_(storage.untyped_storage(), offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a plain module's state needs; storages come from the zip."""

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.storages: dict[str, torch.Tensor] = {}
        self.classes: dict[str, type[_ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict  # the (empty) backward-hooks argument of each tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        # `__torch__.torch.classes.*` are C++ classes, which only their own code can rebuild.
        if (module == "__torch__" or module.startswith("__torch__.")) and not module.startswith(
            "__torch__.torch.classes"
        ):
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        raise UnsafeArchive(f"its state needs {qualified}")

    def persistent_load(self, pid: object) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeArchive(f"unknown persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise UnsafeArchive(f"storage {key!r} has no known element type")
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            flat = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            if flat.numel() != numel:
                raise UnsafeArchive(f"storage {key!r} holds {flat.numel()} values, not {numel}")
            self.storages[key] = flat
        return self.storages[key]


def _flatten(obj: _ScriptObject, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    """Tensor attributes under dotted names, submodules recursed; scalars and None skipped."""
    if depth > 100:
        raise UnsafeArchive("modules nested more than 100 deep")
    for name, value in obj.attributes.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _flatten(value, f"{prefix}{name}.", out, depth + 1)


def read_script_archive(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript module archive under their dotted names, on the CPU.

    Parameters and buffers, and any other tensor attribute (OpenAI's text tower keeps its
    `attn_mask` as one). Nothing from the archive is executed.

    Raises:
        UnsafeArchive: the state needs code or globals outside the closed list, or the archive
            does not hold one module's state.
    """
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise UnsafeArchive("not one top-level data.pkl in the archive")
        prefix = posixpath.dirname(pickles[0]) + "/"
        names = set(archive.namelist())
        if f"{prefix}byteorder" in names:
            order = archive.read(f"{prefix}byteorder").decode().strip()
            if order != sys.byteorder:
                raise UnsafeArchive(f"tensors stored {order}-endian, this machine is {sys.byteorder}")
        with archive.open(pickles[0]) as file:
            try:
                root = _Unpickler(file, archive, prefix).load()
            except UnsafeArchive:
                raise
            except Exception as err:  # noqa: BLE001 - damaged pickles raise many types
                raise UnsafeArchive(f"unreadable data.pkl ({type(err).__name__}: {err})") from err
    if not isinstance(root, _ScriptObject) or not hasattr(root, "attributes"):
        raise UnsafeArchive(f"data.pkl holds a {type(root).__name__}, not a module")
    state: dict[str, torch.Tensor] = {}
    _flatten(root, "", state)
    return state


def pickle_imports(file: IO[bytes], limit: int = 5) -> list[str]:
    """The first globals a pickle imports, found by reading its opcodes (nothing is run).

    Only `GLOBAL` and `STACK_GLOBAL` with literal names are seen; that is what `pickle.dump`
    writes. Stops at the first pickle's end, or at bytes that are not a pickle.
    """
    found: list[str] = []
    strings: list[str] = []  # the last string literals: STACK_GLOBAL's module and name
    try:
        for op, arg, _pos in pickletools.genops(file):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings = [*strings[-1:], arg]
            if len(set(found)) >= limit:
                break
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was seen before it
        pass
    return list(dict.fromkeys(found))
