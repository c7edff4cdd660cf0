"""The one safe checkpoint loader (and atomic savers) of ovseg.

Loading never runs code from a file:

* ``.safetensors`` files (or files whose header says safetensors) are read with safetensors;
  they are never unpickled.
* Every other file is a torch checkpoint.  Before ``torch.load`` sees it, we walk the pickle
  opcodes ourselves (:func:`find_pickle_globals`) and refuse any global outside a short
  allow-list (tensor rebuild functions, storage types, dtypes, ``torch.Size``, ``torch.device``,
  ``collections.OrderedDict`` and the few builtins torch itself needs for bytes / sets /
  complex numbers).  Only then is ``torch.load(..., weights_only=True)`` called, on the same
  open file handle that was scanned.  The scan is what protects us even when
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set or a torch version stops honouring
  ``weights_only``: a file that names ``os.system`` / ``builtins.open`` / any class of its own
  never reaches the unpickler.

Every failure is typed: :class:`~ovseg.errors.WeightsNotFoundError` (no such file),
:class:`~ovseg.errors.UnsafeCheckpointError` (disallowed global),
:class:`~ovseg.errors.CheckpointError` (truncated, corrupt or wrong content).

Saving is atomic (:func:`atomic_path`, from :mod:`ovseg.fileio`): a crash mid-save
leaves the previous file intact and no temporary file behind.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import hashlib
import io
import os
import pickle
import pickletools
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ovseg.errors import CheckpointError, UnsafeCheckpointError, WeightsNotFoundError
from ovseg.fileio import atomic_path

__all__ = [
    "ALLOWED_GLOBALS",
    "atomic_path",
    "find_pickle_globals",
    "load_checkpoint",
    "load_safetensors_metadata",
    "load_state_dict",
    "save_checkpoint",
    "save_state_dict",
    "sha256_file",
    "verify_sha256",
]

PathLike = str | os.PathLike
#: As ``torch.load``'s ``map_location``: a device, a ``{saved: target}`` dict, a callable, None.
MapLocation = str | torch.device | Mapping[str, str] | Callable[..., Any] | None

# --------------------------------------------------------------------------------------------
# Allow-list of pickle globals
# --------------------------------------------------------------------------------------------

_STORAGE_TYPES = (
    "DoubleStorage",
    "FloatStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "ComplexDoubleStorage",
    "ComplexFloatStorage",
    "UntypedStorage",
)


def _build_allowed_globals() -> frozenset[str]:
    names = {
        "collections.OrderedDict",
        # Tensor / Parameter reconstruction (v3 is used for the newer uint16/32/64, float8 ...).
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.storage.UntypedStorage",
        "torch.Size",
        "torch.device",
        # What pickle protocol 2 needs for bytes, bytearray, set and complex values.
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.set",
        "builtins.complex",
    }
    names.update(f"torch.{name}" for name in _STORAGE_TYPES if hasattr(torch, name))
    names.update(f"torch.{attr}" for attr, v in vars(torch).items() if isinstance(v, torch.dtype))
    return frozenset(names)


#: Every ``module.name`` a torch checkpoint may reference; anything else is refused.
ALLOWED_GLOBALS: frozenset[str] = _build_allowed_globals()

#: Plain-data classes a caller may allow besides :data:`ALLOWED_GLOBALS` (``allow=``): training
#: scripts save their command-line arguments (``argparse.Namespace``: attributes only, no code
#: on unpickling; its attribute values are checked against the allow-list like the rest).
PLAIN_DATA_CLASSES: dict[str, type] = {"argparse.Namespace": argparse.Namespace}

_ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (non-zip) format is 5 pickles in a row: magic number, protocol version,
# system info, the object itself, then the list of storage keys; raw storage bytes follow.
_LEGACY_PICKLES = 5
_WRAPPER_KEYS = ("state_dict", "model", "module")
_MAX_UNWRAP_DEPTH = 3

_STRING_OPS = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
    }
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MARK = _Marker("<mark>")
_UNKNOWN = _Marker("<value>")


# --------------------------------------------------------------------------------------------
# Pickle scanning
# --------------------------------------------------------------------------------------------


def _resolve_global(module: str, name: str, proto: int) -> list[str]:
    """The ``module.name`` strings an unpickler may import for one global reference.

    Unpicklers translate Python 2 names (``__builtin__`` -> ``builtins``) for protocols < 3 and
    torch's weights-only unpickler always does; the translated name is what gets imported.  For
    protocol >= 3 the standard unpickler imports the raw name, so both are checked.
    """
    mapped_module, mapped_name = module, name
    if (module, name) in _compat_pickle.NAME_MAPPING:
        mapped_module, mapped_name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        mapped_module = _compat_pickle.IMPORT_MAPPING[module]
    names = [f"{mapped_module}.{mapped_name}"]
    raw = f"{module}.{name}"
    if proto >= 3 and raw != names[0]:
        names.append(raw)
    return names


def _top(stack: list[Any], op: str) -> Any:
    """The value on top of the stack; unpicklers refuse to read across a MARK, and so do we."""
    if not stack or stack[-1] is _MARK:
        raise ValueError(f"{op} with no value on the stack")
    return stack[-1]


def _pop(stack: list[Any], count: int) -> None:
    if count > len(stack) or any(item is _MARK for item in stack[len(stack) - count :]):
        raise ValueError("pickle stack underflow")
    del stack[len(stack) - count :]


def find_pickle_globals(stream: BinaryIO) -> list[str]:
    """Every global (``module.name``) one pickle in ``stream`` would import, without running it.

    Reads one pickle from the current position of ``stream`` up to and including its STOP
    opcode.  ``GLOBAL`` and ``INST`` name their global inline; ``STACK_GLOBAL`` takes module and
    name from the stack, so the stack and memo are simulated (string pushes, ``MEMOIZE`` /
    ``PUT`` / ``GET``, marks, and every other opcode's stack effect from :mod:`pickletools`).
    A ``STACK_GLOBAL`` whose operands are not literal strings is reported as
    ``"<computed STACK_GLOBAL>"``, and extension-registry opcodes (``EXT1/2/4``) as
    ``"<extension registry code N>"``, so that an allow-list check refuses them.

    Raises:
        ValueError: the bytes are not a well-formed pickle (truncated, garbage, underflow).
    """
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    proto = 0
    found: list[str] = []
    for opcode, arg, _pos in pickletools.genops(stream):
        op = opcode.name
        if op == "PROTO":
            proto = int(arg)
        elif op in _STRING_OPS:
            stack.append(str(arg) if not isinstance(arg, bytes) else arg.decode("latin-1"))
        elif op == "MEMOIZE":
            memo[len(memo)] = _top(stack, op)
        elif op in _PUT_OPS:
            memo[int(arg)] = _top(stack, op)
        elif op in _GET_OPS:
            stack.append(memo.get(int(arg), _UNKNOWN))
        elif op == "DUP":
            stack.append(_top(stack, op))
        elif op == "POP":
            if not stack:
                raise ValueError("POP on an empty stack")
            stack.pop()  # like the real unpicklers, POP right after a MARK removes the mark
        elif op in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            found.extend(_resolve_global(module, name, proto))
            if op == "INST":
                _pop_to_mark(stack)
            stack.append(_UNKNOWN)
        elif op == "STACK_GLOBAL":
            if len(stack) < 2:
                raise ValueError("STACK_GLOBAL on a short stack")
            module, name = stack[-2], stack[-1]
            _pop(stack, 2)
            if isinstance(module, str) and isinstance(name, str):
                found.extend(_resolve_global(module, name, proto))
            else:
                found.append("<computed STACK_GLOBAL>")
            stack.append(_UNKNOWN)
        elif op in _EXT_OPS:
            found.append(f"<extension registry code {arg}>")
            stack.append(_UNKNOWN)
        else:
            _apply_stack_effect(opcode, stack)
    return found


def _pop_to_mark(stack: list[Any]) -> None:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            del stack[i:]
            return
    raise ValueError("pickle opcode needs a MARK but none is on the stack")


def _apply_stack_effect(opcode: pickletools.OpcodeInfo, stack: list[Any]) -> None:
    before, after = opcode.stack_before, opcode.stack_after
    if pickletools.markobject in before:
        _pop_to_mark(stack)  # removes the stackslice and the mark itself
        _pop(stack, before.index(pickletools.markobject))
    else:
        _pop(stack, len(before))
    stack.extend(_MARK if kind is pickletools.markobject else _UNKNOWN for kind in after)


def _check_globals(
    names: Iterable[str], where: str, path: Path, allow: frozenset[str] = frozenset()
) -> None:
    for name in names:
        if name not in ALLOWED_GLOBALS and name not in allow:
            err = UnsafeCheckpointError(
                f"refusing to load '{path}': its pickle ({where}) references the global "
                f"'{name}', which is not a tensor, dtype or plain container. Loading it could "
                "run arbitrary code; the file may be malicious. Do not load it with plain "
                "torch.load. If you trust its origin, re-save its tensors as .safetensors "
                "(ovseg.weights.save_state_dict) in a sandbox and load that file instead."
            )
            err.global_name = name  # type: ignore[attr-defined]
            raise err


def _is_pickle_name(name: str) -> bool:
    return name.lower().endswith(".pkl")


def _scan_zip(fh: BinaryIO, path: Path, allow: frozenset[str] = frozenset()) -> None:
    """Scan every pickle of a zip checkpoint, as Python's zipfile and as torch's reader see it.

    Reading the members twice closes parser-differential tricks (two central directories,
    prepended data): whatever torch's own reader will hand to the unpickler is scanned too.
    """
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise CheckpointError(
                f"'{path}' is a TorchScript archive (torch.jit.save), which ovseg never loads "
                "because loading it runs code. Export the model's state_dict instead, e.g. "
                "ovseg.weights.save_state_dict(model.state_dict(), 'model.safetensors')."
            )
        if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            raise CheckpointError(
                f"'{path}' is a zip file but not a torch checkpoint (no data.pkl inside); check "
                "that this is the file you meant."
            )
        for info in infos:  # every pickle, duplicates included
            if _is_pickle_name(info.filename):
                with zf.open(info) as member:
                    _check_globals(find_pickle_globals(member), info.filename, path, allow)

    reader_cls = getattr(torch._C, "PyTorchFileReader", None)
    if reader_cls is None:  # private API gone in some future torch: the zipfile scan stands
        return
    fh.seek(0)
    reader = reader_cls(fh)
    for name in reader.get_all_records():
        if _is_pickle_name(name):
            record = io.BytesIO(reader.get_record(name))
            _check_globals(find_pickle_globals(record), name, path, allow)


def _scan_legacy(fh: BinaryIO, path: Path, allow: frozenset[str] = frozenset()) -> None:
    try:
        with tarfile.open(fileobj=fh, mode="r:"):
            is_tar = True
    except (tarfile.TarError, EOFError, OSError, ValueError):
        is_tar = False
    if is_tar:
        raise CheckpointError(
            f"'{path}' uses torch's pre-0.4 tar checkpoint format, which cannot be loaded "
            "safely. Convert it with an old torch in a sandbox to .safetensors."
        )
    fh.seek(0)
    for index in range(_LEGACY_PICKLES):
        _check_globals(find_pickle_globals(fh), f"legacy pickle #{index}", path, allow)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _existing_file(path: PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsNotFoundError(
            f"checkpoint '{p}' does not exist. Check the path, or download the weights to that "
            "location (ovseg's model zoo lists where each file comes from)."
        )
    if p.is_dir():
        raise CheckpointError(f"checkpoint path '{p}' is a directory; pass the weights file.")
    return p


def _corrupt(path: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"checkpoint '{path}' is truncated or corrupt ({type(err).__name__}: {err}). "
        "Re-download it, or resume from the previous checkpoint."
    )


def _looks_like_safetensors(fh: BinaryIO, size: int) -> bool:
    head = fh.read(9)
    fh.seek(0)
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + header_len <= size


def _safetensors_device(map_location: MapLocation) -> str:
    """safetensors stores no device: a device goes through, a remapping dict/callable -> CPU."""
    if isinstance(map_location, (str, torch.device)):
        return str(torch.device(map_location))
    return "cpu"


def _refuse_misnamed_safetensors(path: Path) -> None:
    """A torch.save file (zip or pickle) named ``.safetensors``: say so instead of "bad header"."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == _ZIP_MAGIC:
        kind = "a zip archive (the format torch.save writes)"
    elif head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        kind = "a pickle file (the legacy torch.save format)"
    else:
        return
    raise CheckpointError(
        f"checkpoint '{path}' is {kind}, not safetensors, although it is named .safetensors. "
        f"Rename it to {path.with_suffix('.pth').name} (.pth or .pt) and pass that path; it is "
        "then loaded with the weights-only checks."
    )


def _load_safetensors(path: Path, map_location: MapLocation) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if path.suffix.lower() == ".safetensors":
        _refuse_misnamed_safetensors(path)
    device = _safetensors_device(map_location)
    try:
        return dict(load_file(str(path), device=device))
    except Exception as err:  # safetensors raises its own error type for bad headers/sizes
        raise _corrupt(path, err) from err


def _load_torch(
    fh: BinaryIO, path: Path, map_location: MapLocation, allow: frozenset[str] = frozenset()
) -> Any:
    try:
        with torch.serialization.safe_globals([PLAIN_DATA_CLASSES[name] for name in sorted(allow)]):
            return torch.load(fh, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines() or [""]
        reason = next((ln for ln in lines if "Unsupported" in ln or "blocked" in ln), lines[0])
        if "Unsupported global" in reason or "blocked" in reason:
            raise UnsafeCheckpointError(
                f"torch's weights-only loader refused '{path}': {reason.strip()} The file may "
                "be malicious; re-save its tensors as .safetensors from a trusted source."
            ) from err
        raise CheckpointError(
            f"torch's weights-only loader cannot read '{path}' ({reason.strip()}). If it was "
            "written with an unusual pickle protocol, re-save it with torch.save defaults or as "
            ".safetensors; if it is damaged, re-download it or resume from the previous "
            "checkpoint."
        ) from err
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # RuntimeError/EOFError/ValueError... from a damaged file
        raise _corrupt(path, err) from err


def _allowed_classes(allow: Iterable[str]) -> frozenset[str]:
    names = frozenset(allow)
    unknown = sorted(names - set(PLAIN_DATA_CLASSES))
    if unknown:
        raise ValueError(
            f"allow= takes only plain-data classes {sorted(PLAIN_DATA_CLASSES)}, not {unknown}."
        )
    return names


def _load_any(
    path: PathLike, map_location: MapLocation, allow: Iterable[str] = ()
) -> tuple[Any, Path]:
    allowed = _allowed_classes(allow)
    p = _existing_file(path)
    if p.suffix.lower() == ".safetensors":
        return _load_safetensors(p, map_location), p
    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise CheckpointError(
                f"checkpoint '{p}' is empty (0 bytes). Re-download it, or resume from the "
                "previous checkpoint."
            )
        if _looks_like_safetensors(fh, size):
            return _load_safetensors(p, map_location), p
        is_zip = fh.read(4) == _ZIP_MAGIC  # the same test torch.load uses to pick a format
        fh.seek(0)
        try:
            if is_zip:
                _scan_zip(fh, p, allowed)
            else:
                _scan_legacy(fh, p, allowed)
        except (CheckpointError, MemoryError):
            raise
        except Exception as err:  # BadZipFile, ValueError from genops, zlib.error, EOFError ...
            raise _corrupt(p, err) from err
        fh.seek(0)
        return _load_torch(fh, p, map_location, allowed), p


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        bad = next(
            ((k, v) for k, v in obj.items() if not (isinstance(k, str) and _is_tensor(v))),
            None,
        )
        detail = ""
        if bad is not None:
            detail = f"; e.g. key {bad[0]!r} holds {type(bad[1]).__name__}"
        return (
            f"a {type(obj).__name__} with keys [{shown}]{detail}, and no 'state_dict' / "
            "'model' / 'module' entry holding only tensors"
        )
    return f"a {type(obj).__name__}"


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and _is_tensor(v) for k, v in obj.items()
    )


def _find_tensor_mapping(obj: Any, depth: int = 0) -> Mapping[str, torch.Tensor] | None:
    if _is_tensor_mapping(obj):
        return obj
    if not isinstance(obj, Mapping) or depth >= _MAX_UNWRAP_DEPTH:
        return None
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            found = _find_tensor_mapping(inner, depth + 1)
            if found is not None:
                return found
    return None


def load_state_dict(
    path: PathLike, map_location: MapLocation = "cpu", allow: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """Load a model state dict (``name -> tensor``) from ``.safetensors`` or a torch checkpoint.

    Torch checkpoints are scanned (see the module docstring) and loaded with
    ``weights_only=True``.  A training checkpoint ``{"state_dict": {...}, "epoch": ...}`` (or
    with ``"model"`` / ``"module"``, nested up to three levels) is unwrapped, and a ``module.``
    prefix that every key carries (DistributedDataParallel) is stripped.

    Args:
        path: the weights file.
        map_location: where tensors go, as in ``torch.load``.  safetensors files record no
            device, so there only a device (str / torch.device) is used; a remapping dict or
            callable loads them on the CPU.
        allow: names from :data:`PLAIN_DATA_CLASSES` the file may also reference (e.g.
            ``("argparse.Namespace",)`` for a training checkpoint that saved its arguments).

    Returns:
        A plain ``dict`` from parameter name to tensor (torch files keep the saved key order;
        safetensors files store keys sorted).

    Raises:
        WeightsNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the pickle references a disallowed global.
        CheckpointError: truncated / corrupt file, or content that is not ``str -> Tensor``.
    """
    obj, p = _load_any(path, map_location, allow)
    found = _find_tensor_mapping(obj)
    if found is None:
        raise CheckpointError(
            f"checkpoint '{p}' does not hold a state dict (str -> Tensor): found "
            f"{_describe(obj)}. Pass the file saved from model.state_dict(), or use "
            "ovseg.weights.load_checkpoint() for general objects."
        )
    state = dict(found)
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_checkpoint(path: PathLike, map_location: MapLocation = "cpu") -> Any:
    """Load a nested checkpoint object (training state: model, optimizer, RNG states, step ...).

    The same safety rules as :func:`load_state_dict` apply, so the object may only contain
    dicts, lists, tuples, sets, str, bytes, int, float, complex, bool, None, tensors,
    ``torch.Size``, ``torch.device`` and dtypes.  A ``.safetensors`` file gives its tensor dict.

    Raises:
        WeightsNotFoundError, UnsafeCheckpointError, CheckpointError: as load_state_dict.
    """
    obj, _ = _load_any(path, map_location)
    return obj


def load_safetensors_metadata(path: PathLike) -> dict[str, str]:
    """The ``str -> str`` metadata stored in a ``.safetensors`` header (empty if none)."""
    from safetensors import safe_open

    p = _existing_file(path)
    _refuse_misnamed_safetensors(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:
        raise _corrupt(p, err) from err


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _prepare_for_safetensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous tensors with no two sharing storage (safetensors refuses both)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be str, got {type(key).__name__} ({key!r})")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        t = value.detach()
        storage = (str(t.device), t.untyped_storage().data_ptr())
        if storage in seen and t.numel() > 0:
            t = t.clone()  # tied weights: store each copy on its own
        else:
            seen.add(storage)
        out[key] = t.contiguous()
    return out


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    path: PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save ``name -> tensor`` as ``.safetensors`` atomically; returns the final path.

    Tensors are detached and made contiguous; tensors sharing storage (tied weights) are
    cloned.  ``metadata`` is an optional ``str -> str`` mapping stored in the header (read it
    back with :func:`load_safetensors_metadata`).  The file is written under a temporary name
    in the same folder, fsynced and renamed, so an existing file is replaced only on success.
    """
    from safetensors.torch import save_file

    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError("safetensors metadata must map str to str")
    tensors = _prepare_for_safetensors(state)
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata is not None else None)
    return target


def save_checkpoint(obj: Any, path: PathLike) -> Path:
    """``torch.save`` a nested object atomically (temp file + fsync + rename); returns the path.

    The written file is scanned like a loaded one, so an object that
    :func:`load_checkpoint` would refuse (numpy arrays, custom classes, modules, functions)
    fails here with :class:`CheckpointError`, and nothing is written.
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
        with open(tmp, "rb") as fh:
            try:
                _scan_zip(fh, target)
            except UnsafeCheckpointError as err:
                name = getattr(err, "global_name", "?")
                raise CheckpointError(
                    f"cannot save this object to '{target}': it holds a value pickled as "
                    f"'{name}', which load_checkpoint() refuses to load. Convert such values "
                    "to tensors or plain Python types (dict/list/tuple/int/float/str/bool/None) "
                    "before saving; nothing was written."
                ) from None
    return target


# --------------------------------------------------------------------------------------------
# Hashes
# --------------------------------------------------------------------------------------------


def sha256_file(path: PathLike, *, chunk_size: int = 1 << 20) -> str:
    """The lowercase hex SHA-256 of a file, read in ``chunk_size`` blocks."""
    p = _existing_file(path)
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: PathLike, expected: str) -> str:
    """Check that the file's SHA-256 equals ``expected`` (64 hex digits); return the digest.

    Raises:
        ValueError: ``expected`` is not a 64-digit hex string.
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: the hashes differ (both are named in the message).
    """
    want = expected.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise ValueError(f"expected SHA-256 must be 64 hex digits, got {expected!r}")
    actual = sha256_file(path)
    if actual != want:
        raise CheckpointError(
            f"checksum mismatch for '{Path(path)}': expected sha256 {want}, got {actual}. The "
            "file is incomplete, corrupt or a different version; delete it and download it again."
        )
    return actual
