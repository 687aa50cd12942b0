"""ModelSpec: how to rebuild a model (a class by module path + JSON arguments); the trust rule.

A spec is stored as JSON next to a checkpoint's tensors. Building one back never runs code from
the checkpoint: :func:`resolve_class` imports a module only when its dotted name starts with one
of the trusted prefixes the caller gave, and refuses anything else naming the class.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from highmark.errors import ConfigError

SPEC_FORMAT = 1


def _check_json(value: Any, where: str) -> None:
    """Refuses a value that JSON cannot carry back unchanged, naming the argument at fault."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(
                f"ModelSpec argument {where} is {value!r}: only finite floats are JSON"
            )
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"ModelSpec argument {where} has a non-string key {key!r}")
            _check_json(item, f"{where}[{key!r}]")
        return
    raise ConfigError(
        f"ModelSpec argument {where} is a {type(value).__name__}: only JSON values "
        "(None, bool, int, finite float, str, list, dict with str keys) can be stored"
    )


def class_path(target: type | str) -> str:
    """The ``"module:QualName"`` of a class, or the string checked for that form."""
    if isinstance(target, str):
        module, sep, qualname = target.partition(":")
        if not sep or not module or not qualname or "<locals>" in qualname:
            raise ConfigError(f"ModelSpec target {target!r} is not of the form 'module:QualName'")
        return target
    if not isinstance(target, type):
        raise ConfigError(f"ModelSpec target {target!r} is neither a class nor 'module:QualName'")
    if "<locals>" in target.__qualname__ or target.__module__ == "__main__":
        raise ConfigError(
            f"ModelSpec target {target.__module__}:{target.__qualname__} cannot be imported by "
            "another process: define the class at the top level of an importable module"
        )
    return f"{target.__module__}:{target.__qualname__}"


@dataclass(frozen=True)
class ModelSpec:
    """A model's architecture: the class to build and the JSON arguments to build it with.

    >>> ModelSpec("collections:OrderedDict", a=1).to_json()["target"]
    'collections:OrderedDict'
    """

    target: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, target: type | str, *args: Any, **kwargs: Any) -> None:
        path = class_path(target)
        for i, arg in enumerate(args):
            _check_json(arg, f"#{i}")
        for name, arg in kwargs.items():
            _check_json(arg, repr(name))
        object.__setattr__(self, "target", path)
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "kwargs", dict(kwargs))

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object (what a checkpoint stores)."""
        return {
            "format": SPEC_FORMAT,
            "target": self.target,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelSpec:
        """Reads a stored spec back, validated; ConfigError when it is malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            raise ConfigError(f"a stored model spec must be an object with a 'target': {data!r}")
        if data.get("format", SPEC_FORMAT) != SPEC_FORMAT:
            raise ConfigError(f"model spec format {data.get('format')!r} is not supported")
        args, kwargs = data.get("args", []), data.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ConfigError(
                f"model spec {data['target']}: 'args' must be a list, 'kwargs' an object"
            )
        return cls(data["target"], *args, **kwargs)

    def dumps(self) -> str:
        """The spec as JSON text."""
        return json.dumps(self.to_json(), sort_keys=True, allow_nan=False)

    def build(self, trust: Sequence[str]) -> Any:
        """Imports the class under the trust rule and calls it with the stored arguments."""
        return resolve_class(self.target, trust)(*self.args, **self.kwargs)


def resolve_class(target: str, trust: Sequence[str]) -> Any:
    """The class named ``"module:QualName"``, imported only when the module is trusted.

    A module is trusted when its dotted name equals a prefix without its trailing dot or starts
    with a prefix (``"mypackage."`` trusts ``mypackage`` and everything below it). Anything else
    is refused with ConfigError naming the class, before any import.
    """
    module, _, qualname = class_path(target).partition(":")
    if isinstance(trust, str):
        raise ConfigError(f"trust must be a list of module prefixes, not the string {trust!r}")
    if not any(_trusted(module, prefix) for prefix in trust):
        raise ConfigError(
            f"refusing to import {target}: module {module!r} is not under a trusted prefix "
            f"{list(trust)!r}; pass trust=[{module.split('.')[0] + '.'!r}] if you trust it"
        )
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        if part.startswith("_") and part != "__init__":
            raise ConfigError(f"refusing {target}: private name {part!r}")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{target}: {module} has no attribute {qualname!r}") from None
    if not isinstance(obj, type):
        raise ConfigError(f"{target} is not a class")
    return obj


def _trusted(module: str, prefix: str) -> bool:
    if not isinstance(prefix, str) or not prefix.strip("."):
        raise ConfigError(f"trust prefix {prefix!r} must be a non-empty module name")
    return module == prefix.rstrip(".") or module.startswith(
        prefix if prefix.endswith(".") else prefix + "."
    )
