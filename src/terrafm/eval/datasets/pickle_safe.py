"""Reading the pickles that benchmark files carry, without running anything in them (docs/design.md, "Evaluation protocols / GEO-Bench v1").

GEO-Bench stores sample metadata as a pickle: the HDF5 root attribute ``pickle`` holds the string
form of a bytes literal (``"b'\\x80\\x04...'"``), and every task folder has a ``task_specs.pkl``.
Unpickling executes whatever callables the file names, so a crafted file could run any code. This
module never calls :func:`pickle.load`; it uses a :class:`pickle.Unpickler` whose ``find_class``
allows only:

- plain containers, numbers and strings (these need no global at all), ``set``/``frozenset``/
  ``complex``/``bytearray``, ``collections.OrderedDict`` and the ``datetime`` value types;
- numpy arrays, dtypes and scalars, through guarded constructors that refuse object dtypes (an
  object array would hand its payload back to the full unpickler);
- with ``metadata=True`` only: the metadata classes GEO-Bench writes (``geobench.*`` band and label
  descriptions, ``affine.Affine``, ``rasterio.crs.CRS``). These are **not imported**: each becomes
  an inert :class:`PickledObject` that records its arguments and state and runs no code.

Any other global is refused with :class:`UnsafePickleError` naming the file and the global; the
refusal happens when the global is looked up, before anything in the file is called.
"""

from __future__ import annotations

import _compat_pickle
import ast
import collections
import datetime
import io
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from terrafm.errors import DataError

__all__ = [
    "PickledObject",
    "UnsafePickleError",
    "bytes_literal",
    "safe_load_file",
    "safe_loads",
]


class UnsafePickleError(DataError, pickle.UnpicklingError, ValueError):
    """A pickle names something outside the allowed plain-data set (or is malformed)."""


class PickledObject:
    """An inert stand-in for an allowed metadata class: records what the pickle passed to it.

    Attributes:
        origin: ``(module, name)`` of the class the pickle named.
        args: positional arguments of the constructor call.
        state: the ``__setstate__`` payload, if any.
    """

    origin: tuple[str, str] = ("", "")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the recorded state (dict states, or ``(dict, slots)`` pairs)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            return state.get(key, default)
        return default

    def __repr__(self) -> str:
        return f"PickledObject({self.origin[0]}.{self.origin[1]})"


def _multiarray() -> Any:
    from numpy._core import multiarray

    return multiarray


def _numeric() -> Any:
    from numpy._core import numeric

    return numeric


def _refuse_object(dtype: Any, what: str) -> None:
    if np.dtype(dtype).hasobject:
        raise UnsafePickleError(f"object-dtype {what} are not allowed")


def _dtype(*args: Any, **kwargs: Any) -> np.dtype:
    dt = np.dtype(*args, **kwargs)
    _refuse_object(dt, "dtypes")
    return dt


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"ndarray subclass {subtype!r} is not allowed")
    _refuse_object(dtype, "arrays")
    return _multiarray()._reconstruct(subtype, shape, dtype)


def _scalar(dtype: Any, obj: Any = None) -> Any:
    _refuse_object(dtype, "scalars")
    return _multiarray().scalar(dtype, obj) if obj is not None else _multiarray().scalar(dtype)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _refuse_object(dtype, "arrays")
    return _numeric()._frombuffer(buf, dtype, shape, order)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol-2 pickles written by Python 2 spell bytes as _codecs.encode(str, "latin1").
    if not isinstance(obj, str):
        raise UnsafePickleError("_codecs.encode is only allowed on strings")
    return obj.encode(encoding, errors)


_PLAIN: dict[tuple[str, str], Callable[..., Any]] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("datetime", "date"): datetime.date,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): np.ndarray,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _PLAIN[(_mod, "_reconstruct")] = _reconstruct
    _PLAIN[(_mod, "scalar")] = _scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _PLAIN[(_mod, "_frombuffer")] = _frombuffer

# Modules GEO-Bench metadata classes have been pickled under (current and historical names).
_METADATA_MODULES = frozenset(
    {
        "geobench",
        "geobench.dataset",
        "geobench.label",
        "geobench.task",
        "geobench.io",
        "geobench.io.dataset",
        "geobench.io.label",
        "geobench.io.task",
        "ccb",
        "ccb.io",
        "ccb.io.dataset",
        "ccb.io.label",
        "ccb.io.task",
        "ccb.dataset.io",
    }
)
_METADATA_GLOBALS = frozenset({("affine", "Affine"), ("rasterio.crs", "CRS")})
_CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")


class _Restricted(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, source: str, metadata: bool):
        super().__init__(file)
        self.source = source
        self.metadata = metadata
        self._inert: dict[tuple[str, str], type[PickledObject]] = {}

    def _inert_class(self, module: str, name: str) -> type[PickledObject]:
        key = (module, name)
        if key not in self._inert:
            cls = type(name, (PickledObject,), {"origin": key, "__module__": __name__})
            self._inert[key] = cls
        return self._inert[key]

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        # copyreg._reconstructor, used by protocol 0/1 pickles of plain classes.
        if isinstance(cls, type) and issubclass(cls, PickledObject) and base is object:
            return cls.__new__(cls)
        raise UnsafePickleError(f"{self.source}: copyreg._reconstructor of {cls!r} is not allowed")

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 spellings (protocols 0-2), as the default find_class would map them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _PLAIN:
            return _PLAIN[key]
        if self.metadata:
            if key == ("copyreg", "_reconstructor"):
                return self._reconstructor
            if key in _METADATA_GLOBALS or (
                module in _METADATA_MODULES and _CLASS_NAME.match(name)
            ):
                return self._inert_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refusing to unpickle global {module}.{name}: only plain data "
            "(containers, numbers, strings, numpy arrays) is allowed; nothing in the file was run"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed")


def safe_loads(data: bytes, source: str | Path = "<bytes>", *, metadata: bool = False) -> Any:
    """Unpickle ``data`` allowing only plain data (and, with ``metadata``, inert GEO-Bench records).

    Args:
        data: the pickle bytes.
        source: the file the bytes came from, named in every error.
        metadata: also accept the GEO-Bench metadata classes, as inert :class:`PickledObject`.

    Raises:
        UnsafePickleError: the pickle names a disallowed global, or is malformed.
    """
    try:
        return _Restricted(io.BytesIO(data), str(source), metadata).load()
    except UnsafePickleError as e:
        if str(e).startswith(f"{source}:"):
            raise
        raise UnsafePickleError(f"{source}: {e}; nothing in the file was run") from e
    except Exception as e:  # truncated or corrupt stream: report it, never fall back
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e


def safe_load_file(path: str | Path, *, metadata: bool = False) -> Any:
    """:func:`safe_loads` on the contents of a file (e.g. GEO-Bench's ``task_specs.pkl``)."""
    path = Path(path)
    return safe_loads(path.read_bytes(), path, metadata=metadata)


def bytes_literal(text: str | bytes, source: str | Path) -> bytes:
    """The bytes of a ``"b'...'"`` string (how GEO-Bench stores its pickle attribute).

    Parsed with :func:`ast.literal_eval`, which evaluates literals only.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise UnsafePickleError(f"{source}: pickle attribute is not a bytes literal ({e})") from e
    if not isinstance(value, bytes):
        raise UnsafePickleError(
            f"{source}: pickle attribute holds a {type(value).__name__}, not a bytes literal"
        )
    return value
