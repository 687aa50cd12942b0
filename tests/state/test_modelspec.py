"""Tests of highmark.state.modelspec: JSON-only arguments, the stored form, the trust rule."""

from __future__ import annotations

import collections
import sys

import pytest

from highmark.errors import ConfigError
from highmark.state.modelspec import ModelSpec, resolve_class


def test_spec_of_a_class_names_its_module_and_qualname() -> None:
    spec = ModelSpec(collections.OrderedDict, a=1)
    assert spec.target == "collections:OrderedDict"


def test_spec_round_trips_through_json() -> None:
    spec = ModelSpec("collections:Counter", [1, 2], b={"c": [0.5, None, True]})
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_non_json_argument_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match="'act'"):
        ModelSpec("collections:Counter", act=object())


def test_non_finite_float_argument_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'lr'"):
        ModelSpec("collections:Counter", lr=float("nan"))


def test_local_class_is_refused() -> None:
    class Local:
        pass

    with pytest.raises(ConfigError, match="top level"):
        ModelSpec(Local)


def test_malformed_target_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="module:QualName"):
        ModelSpec("collections.Counter")


def test_trusted_prefix_builds_the_class() -> None:
    built = ModelSpec("collections:Counter", "aab").build(trust=["collections"])
    assert built == collections.Counter("aab")


def test_untrusted_module_is_refused_before_import() -> None:
    name = "highmark_never_imported_module"
    with pytest.raises(ConfigError, match=f"{name}:Evil"):
        resolve_class(f"{name}:Evil", trust=["mypackage."])
    assert name not in sys.modules


def test_prefix_does_not_trust_a_sibling_with_the_same_start() -> None:
    with pytest.raises(ConfigError, match="collectionsx"):
        resolve_class("collectionsx:Thing", trust=["collections"])


def test_trust_given_as_a_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="list"):
        resolve_class("collections:Counter", trust="collections")  # type: ignore[arg-type]


def test_target_that_is_not_a_class_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a class"):
        resolve_class("os.path:join", trust=["os."])
