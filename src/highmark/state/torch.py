"""torch support: the torch leaf codec, dtype names, byte views, RNG states, fence hooks.

This is the only module of the core that imports torch; the store reaches it through
:func:`highmark.state.leafcodecs.codec_for_kind` ("torch"), so ``import highmark`` and the store
stay free of torch until a torch tensor is saved or restored.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from highmark.errors import UnsupportedStateError
from highmark.state.dtypes import DTYPES, Target

__all__ = [
    "TORCH_CODEC",
    "TorchCodec",
    "byte_view",
    "capture_rng",
    "dtype_from_name",
    "dtype_from_safetensors",
    "dtype_name",
    "fence_hooks",
    "restore_rng",
    "safetensors_dtype",
    "writable_byte_view",
]

log = logging.getLogger(__name__)

_CHUNK = 64 << 20


_DTYPE_NAMES: dict[torch.dtype, str] = {}  # filled as dtypes are met


def dtype_name(dtype: torch.dtype) -> str:
    """The canonical name of a torch dtype (``torch.bfloat16`` -> ``"bfloat16"``).

    Raises:
        ValueError: when highmark cannot store tensors of this dtype (e.g. quantized dtypes).
    """
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = str(dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise ValueError(f"dtype {dtype} is not storable")
        _DTYPE_NAMES[dtype] = name
    return name


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype of a canonical name (``"float8_e4m3fn"`` -> ``torch.float8_e4m3fn``).

    Raises:
        ValueError: when the name is unknown or this torch has no such dtype.
    """
    dtype = getattr(torch, name, None) if name in DTYPES else None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype {name!r} is not available in torch {torch.__version__}")
    return dtype


def safetensors_dtype(dtype: torch.dtype) -> str | None:
    """The safetensors dtype string of a torch dtype (``"BF16"``), None when stored bytewise."""
    return DTYPES[dtype_name(dtype)].st


def dtype_from_safetensors(st: str) -> torch.dtype:
    """The torch dtype a safetensors dtype string names (``"F8_E4M3"`` -> ``float8_e4m3fn``).

    Raises:
        ValueError: for a dtype string safetensors or this torch does not know.
    """
    for d in DTYPES.values():
        if d.st == st:
            return dtype_from_name(d.name)
    raise ValueError(f"unknown safetensors dtype {st!r}")


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t`` without autograd, conjugate or negative bits (copying only when a bit is set)."""
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t


def _bytes_of(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor's memory (size-1 dims may carry any stride)."""
    return t.as_strided((t.numel(),), (1,)).view(torch.uint8)


# dtypes numpy shares with torch: their tensors' memory is viewed through numpy directly (cheaper
# per tensor than a reinterpreting view, which matters for states of many small tensors).
_NUMPY_VIEWABLE = frozenset(
    {
        torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.bool,
    }
)  # fmt: skip


#: Tensor types whose numpy() is their own memory (a subclass may override it).
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _host_bytes(t: torch.Tensor) -> memoryview:
    """A byte view of a contiguous CPU tensor without autograd, conjugate or negative bits."""
    if t.dtype in _NUMPY_VIEWABLE:
        try:
            return memoryview(cast(Any, t.numpy())).cast("B")
        except (TypeError, ValueError):  # e.g. odd strides on size-1 dims
            pass
    return _bytes_of(t).numpy().data


def byte_view(t: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor (for streaming writes).

    Raises:
        ValueError: when the tensor is not contiguous CPU memory.
    """
    t = _plain(t)
    if t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError("byte_view needs a contiguous CPU tensor")
    return _host_bytes(t)


def writable_byte_view(t: torch.Tensor) -> memoryview | None:
    """A writable zero-copy byte view of a tensor (for ``readinto``); None when not possible.

    None is returned for tensors that are not contiguous CPU memory, or that carry a conjugate or
    negative bit (their memory does not hold their values).
    """
    if not t.is_cpu or not t.is_contiguous() or t.is_conj() or t.is_neg():
        return None
    return _host_bytes(t.detach() if t.requires_grad else t)


def fence_hooks(fence: Callable[[], object], objects: Iterable[Any]) -> list[Any]:
    """Makes the saved state wait for ``fence()`` before it changes (deferred async saves).

    Each optimizer calls ``fence()`` before its step; each module holding buffers (batch-norm
    statistics change in the forward pass) before its forward pass. Other objects get nothing.
    A wrapping optimizer that steps an inner one (accelerate's ``AcceleratedOptimizer``, as the
    Hugging Face Trainer holds it) gets its hook on the inner optimizer, whose step is the one
    that changes the state. Returns the hook handles; ``.remove()`` them to undo.
    """

    def hook(*_: Any) -> None:
        fence()

    handles: list[Any] = []
    for obj in objects:
        if isinstance(obj, torch.optim.Optimizer):
            inner: Any = obj
            while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
                inner = inner.optimizer
            handles.append(inner.register_step_pre_hook(hook))
        elif isinstance(obj, torch.nn.Module) and any(True for _ in obj.buffers()):
            handles.append(obj.register_forward_pre_hook(hook))
    return handles


class TorchCodec:
    """The leaf codec of torch tensors: every dtype of :data:`~highmark.state.dtypes.DTYPES`, on
    any device.

    Tensors come back on the CPU; a tensor of an exotic dtype (``complex128``, ``complex32``,
    ``bits*``) is written bytewise. Tensors sharing memory (views, tied weights) are written once
    each; they come back as separate tensors.
    """

    kind = "torch"

    def describe(self, leaf: Any, path: str) -> tuple[str, tuple[int, ...]]:
        if not isinstance(leaf, torch.Tensor):
            raise UnsupportedStateError(
                path, f"{type(leaf).__module__}.{type(leaf).__qualname__} is not a tensor"
            )
        if leaf.layout != torch.strided or leaf.is_quantized or leaf.is_nested:
            what = "nested" if leaf.is_nested else "quantized" if leaf.is_quantized else leaf.layout
            raise UnsupportedStateError(path, f"{what} tensors are not storable")
        if leaf.is_meta:
            raise UnsupportedStateError(path, "a meta tensor has no data to store")
        try:
            name = dtype_name(leaf.dtype)
        except ValueError as exc:
            raise UnsupportedStateError(path, str(exc)) from None
        return name, tuple(leaf.shape)  # torch.Size holds ints

    def chunks(self, leaf: Any, max_bytes: int) -> Iterator[memoryview]:
        # detach() is a dispatched op, which lets go of the GIL: a background save's writer
        # would wait for it back, per tensor, while the training thread runs Python.
        t = leaf.detach() if leaf.requires_grad else leaf
        if t.numel() == 0:
            return
        if t.device.type == "cpu" and t.is_contiguous() and not (t.is_conj() or t.is_neg()):
            yield _host_bytes(t)
            return
        yield from self._blocks(t, max_bytes)

    def _blocks(self, t: torch.Tensor, max_bytes: int) -> Iterator[memoryview]:
        nbytes = t.numel() * t.element_size()
        if t.dim() == 0 or nbytes <= max_bytes:
            block = _plain(t).to("cpu").contiguous()
            yield _bytes_of(block).numpy().data
            return
        row = nbytes // t.shape[0]
        if row > max_bytes:
            for i in range(t.shape[0]):
                yield from self._blocks(t[i], max_bytes)
            return
        step = max(1, max_bytes // row)
        for i in range(0, t.shape[0], step):
            block = _plain(t[i : i + step]).to("cpu").contiguous()
            yield _bytes_of(block).numpy().data
            del block  # one block alive at a time

    def empty(self, dtype: str, shape: tuple[int, ...]) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "ComplexHalf support is experimental")
            return torch.empty(shape, dtype=dtype_from_name(dtype))

    def from_buffer(self, buffer: memoryview, dtype: str, shape: tuple[int, ...]) -> Any:
        if len(buffer) == 0:
            return self.empty(dtype, shape)
        flat = torch.frombuffer(buffer, dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "ComplexHalf support is experimental")
            return flat.view(dtype_from_name(dtype)).reshape(shape)

    def layout_key(self, leaf: Any) -> Hashable:
        return (leaf.dtype, leaf.shape)

    def copy_into(self, dests: Sequence[Any], leaves: Sequence[Any]) -> None:
        with torch.no_grad():
            try:  # one call (the GIL released throughout) for the whole batch
                torch._foreach_copy_(list(dests), list(leaves))
                return
            except (AttributeError, NotImplementedError, RuntimeError, TypeError):
                pass  # an older torch, or a batch it cannot take: one at a time
            for dest, leaf in zip(dests, leaves, strict=True):
                dest.copy_(leaf)

    def writable_bytes(self, leaf: Any) -> memoryview | None:
        return writable_byte_view(leaf)

    def describe_target(self, leaf: Any, path: str) -> Target:
        # One pass over the attributes a restore needs per tensor (this runs for every tensor
        # of a restore into a live model, so it skips describe()'s second pass).
        name = _DTYPE_NAMES.get(leaf.dtype) if isinstance(leaf, torch.Tensor) else None
        if name is not None and type(leaf) in _PLAIN and leaf.dtype in _NUMPY_VIEWABLE:
            # Plain contiguous host memory, the common case, in one step: numpy() refuses every
            # other tensor (on a device, meta, sparse, nested, requiring grad, with a conjugate
            # or negative bit) and the cast any layout that is not C-contiguous.
            try:
                array = leaf.numpy()
                return name, array.shape, memoryview(array).cast("B")
            except (RuntimeError, TypeError, ValueError):
                pass  # the checks one at a time, below
        if name is None or leaf.layout != torch.strided or leaf.is_quantized or leaf.is_nested:
            dtype, shape = self.describe(leaf, path)  # the error, or a first-met dtype
            return dtype, shape, self.writable_bytes(leaf)
        if leaf.is_meta:
            raise UnsupportedStateError(path, "a meta tensor has no data to store")
        return name, tuple(leaf.shape), writable_byte_view(leaf)

    def assign(self, dest: Any, src: Any) -> None:
        with torch.no_grad():
            dest.copy_(src)

    def version(self, leaf: Any) -> int | None:
        # Shared by views (a state_dict's detached tensors count their parameter's in-place
        # writes); writes through ``.data`` or a numpy view are not counted.
        return int(leaf._version)


TORCH_CODEC = TorchCodec()


def capture_rng() -> dict[str, Any]:
    """The RNG states of Python, NumPy (global), torch CPU and CUDA (when available), as a tree.

    The tree holds only tensors, numpy arrays and JSON scalars, so it is saved like any state.
    """
    version, internal, gauss = random.getstate()
    algorithm, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": np.asarray(internal, dtype=np.uint32),
            "gauss": gauss,
        },
        "numpy": {
            "algorithm": str(algorithm),
            "keys": np.array(keys, dtype=np.uint32),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng` (parts missing from ``state`` are left
    alone; CUDA states are restored for the devices present, with a warning when counts differ)."""
    if "python" in state:
        py = state["python"]
        internal = tuple(int(x) for x in np.asarray(py["state"]).tolist())
        gauss = py["gauss"]
        random.setstate((int(py["version"]), internal, None if gauss is None else float(gauss)))
    if "numpy" in state:
        st = state["numpy"]
        np.random.set_state(
            (
                str(st["algorithm"]),
                np.asarray(st["keys"], dtype=np.uint32),
                int(st["pos"]),
                int(st["has_gauss"]),
                float(st["cached_gaussian"]),
            )
        )
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state:
        saved = list(state["cuda"])
        if not torch.cuda.is_available():
            log.warning("checkpoint holds CUDA RNG states but CUDA is not available; not restored")
            return
        count = torch.cuda.device_count()
        if count != len(saved):
            log.warning(
                "checkpoint holds CUDA RNG states for %d devices, %d present; restoring %d",
                len(saved),
                count,
                min(count, len(saved)),
            )
        for device, rng in enumerate(saved[:count]):
            torch.cuda.set_rng_state(torch.as_tensor(rng, dtype=torch.uint8).cpu(), device)
