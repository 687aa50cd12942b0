"""Tests of highmark.state.tree: flatten/unflatten round trips, key paths, refusals, select."""

from __future__ import annotations

import enum
import json
import math
import subprocess
import sys
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from highmark.errors import ConfigError, UnsupportedStateError
from highmark.state.skeleton import select, tensor_kinds
from highmark.state.tree import FlatTree, flatten, tensor_leaves, unflatten


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact equality of trees: same types everywhere, NaN equal to NaN, -0.0 distinct from 0.0."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert type(k) is type(next(x for x in b if x == k)), f"{path}.{k}: key type"
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}.{i}")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        ), path
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype, path
        assert a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    else:
        assert a == b, path


def round_trip(tree: Any) -> Any:
    flat = flatten(tree)
    skeleton = json.loads(json.dumps(flat.skeleton))  # the skeleton must survive JSON
    return unflatten(skeleton, flat.tensors)


def test_json_scalars_round_trip_exactly() -> None:
    tree = [0, -1, 2**70, 0.1, -0.0, math.inf, -math.inf, math.nan, True, False, 'é\n"', None]
    assert_same(round_trip(tree), tree)


def test_int_dict_keys_stay_int() -> None:
    tree = {"state": {0: {"step": 3}, 1: {"step": 4}}}
    back = round_trip(tree)
    assert list(back["state"]) == [0, 1]
    assert_same(back, tree)


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    tree = {"betas": (0.9, 0.999), "params": [0, 1, 2], "nested": ((), [()])}
    assert_same(round_trip(tree), tree)


def test_ordered_dict_stays_ordered_dict() -> None:
    tree = OrderedDict([("b", 1), ("a", 2)])
    back = round_trip(tree)
    assert type(back) is OrderedDict
    assert list(back) == ["b", "a"]


def test_numpy_arrays_and_scalars_keep_their_types() -> None:
    tree = {
        "a": np.arange(6, dtype=np.int16).reshape(2, 3),
        "s": np.float32(1.5),
        "b": np.bool_(True),
    }
    back = round_trip(tree)
    assert_same(back, tree)
    assert type(back["s"]) is np.float32
    assert type(back["b"]) is np.bool_


def test_key_paths_join_keys_with_dots() -> None:
    tree = {"model": {"layer1.weight": np.zeros(2)}, "opt": {"state": {3: {"m": np.ones(1)}}}}
    assert list(flatten(tree).tensors) == ["model.layer1.weight", "opt.state.3.m"]


def test_list_elements_are_keyed_by_index() -> None:
    assert list(flatten({"xs": [np.zeros(1), np.ones(1)]}).tensors) == ["xs.0", "xs.1"]


def test_root_array_has_the_empty_key_path() -> None:
    flat = flatten(np.arange(3))
    assert list(flat.tensors) == [""]
    assert_same(unflatten(flat.skeleton, flat.tensors), np.arange(3))


def test_empty_string_keys_have_their_own_key_paths() -> None:
    flat = flatten({"": np.zeros(1), "a": [{"": np.ones(1)}]})
    assert list(flat.tensors) == ["", "a.0."]
    assert tensor_kinds(flat.skeleton) == {"": "numpy", "a.0.": "numpy"}


def test_dotted_key_colliding_with_nested_key_is_refused() -> None:
    with pytest.raises(UnsupportedStateError, match=r"a\.b") as info:
        flatten({"a.b": np.zeros(1), "a": {"b": np.ones(1)}})
    assert info.value.path == "a.b"


def test_int_and_str_keys_with_the_same_digits_are_refused() -> None:
    with pytest.raises(UnsupportedStateError) as info:
        flatten({"s": {3: 1, "3": 2}})
    assert info.value.path == "s.3"


def test_unsupported_leaf_names_its_key_path() -> None:
    tree = {"optimizer": {"state": {3: {"step": object()}}}}
    with pytest.raises(UnsupportedStateError) as info:
        flatten(tree)
    assert info.value.path == "optimizer.state.3.step"
    assert "optimizer.state.3.step" in str(info.value)


def test_a_state_that_contains_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append({"back": loop})
    with pytest.raises(UnsupportedStateError, match="cycle") as info:
        flatten({"x": loop})
    assert info.value.path == "x.1.back"


def test_tensor_leaves_are_flattens_tensors_with_their_kinds() -> None:
    tree = {"a": [np.zeros(2), {"b": np.float32(1.5)}], "c": (3, "x"), 4: np.ones(1)}
    flat = flatten(tree)
    leaves = tensor_leaves(tree)
    assert list(leaves) == list(flat.tensors)
    assert {p: kind for p, (_, kind) in leaves.items()} == flat.kinds
    assert leaves["a.0"][0] is tree["a"][0]  # the live array
    assert leaves["a.1.b"][0].shape == ()  # a numpy scalar comes as a 0-d array


def test_tensor_leaves_refuses_what_flatten_refuses() -> None:
    loop: list[Any] = [np.zeros(1)]
    loop.append({"back": loop})
    with pytest.raises(UnsupportedStateError, match="cycle"):
        tensor_leaves({"x": loop})
    with pytest.raises(UnsupportedStateError) as info:
        tensor_leaves({"o": {"p": object()}})
    assert info.value.path == "o.p"
    with pytest.raises(UnsupportedStateError, match="two tensors") as info:
        tensor_leaves({"a.b": np.zeros(1), "a": {"b": np.ones(1)}})
    assert info.value.path == "a.b"


def test_a_container_shared_by_two_branches_is_stored_twice() -> None:
    shared = {"lr": 0.1}
    assert_same(round_trip({"a": shared, "b": shared}), {"a": {"lr": 0.1}, "b": {"lr": 0.1}})


def test_set_is_refused() -> None:
    with pytest.raises(UnsupportedStateError, match=r"builtins\.set"):
        flatten({"x": {1, 2}})


def test_float_dict_key_is_refused() -> None:
    with pytest.raises(UnsupportedStateError, match="dict key"):
        flatten({"x": {1.5: 1}})


def test_bool_dict_key_is_refused() -> None:
    # True would come back as the int key 1
    with pytest.raises(UnsupportedStateError, match="dict key"):
        flatten({True: 1})


def test_int_subclass_leaf_is_refused() -> None:
    class Color(enum.IntEnum):
        RED = 1

    with pytest.raises(UnsupportedStateError) as info:
        flatten({"c": Color.RED})
    assert info.value.path == "c"


def test_dict_subclass_is_refused() -> None:
    from collections import defaultdict

    with pytest.raises(UnsupportedStateError, match="defaultdict"):
        flatten({"d": defaultdict(int)})


def test_numpy_object_array_is_refused() -> None:
    with pytest.raises(UnsupportedStateError, match="dtype object") as info:
        flatten({"a": [np.array([None])]})
    assert info.value.path == "a.0"


def test_numpy_masked_array_is_refused() -> None:
    with pytest.raises(UnsupportedStateError, match="MaskedArray"):
        flatten({"m": np.ma.array([1, 2], mask=[0, 1])})


def test_select_keeps_only_the_given_top_level_key() -> None:
    tree = {"model": {"w": np.zeros(2)}, "optimizer": {"lr": 0.1}, "step": 3}
    flat = flatten(tree)
    assert_same(
        unflatten(select(flat.skeleton, ["model"]), flat.tensors), {"model": {"w": np.zeros(2)}}
    )


def test_select_reaches_nested_key_paths() -> None:
    tree = {"optimizer": {"state": {0: {"m": np.ones(1)}}, "param_groups": [{"lr": 0.1}]}}
    flat = flatten(tree)
    sub = select(flat.skeleton, ["optimizer.state"])
    assert_same(unflatten(sub, flat.tensors), {"optimizer": {"state": {0: {"m": np.ones(1)}}}})
    assert list(tensor_kinds(sub)) == ["optimizer.state.0.m"]


def test_select_resolves_dotted_keys() -> None:
    tree = {"model": {"layer1.weight": np.ones(1), "layer1.bias": np.zeros(1)}}
    flat = flatten(tree)
    sub = select(flat.skeleton, ["model.layer1.bias"])
    assert_same(unflatten(sub, flat.tensors), {"model": {"layer1.bias": np.zeros(1)}})


def test_select_inside_a_list_gives_a_dict_keyed_by_index() -> None:
    flat = flatten({"xs": [1, 2, 3]})
    assert unflatten(select(flat.skeleton, ["xs.2"]), {}) == {"xs": {2: 3}}


def test_select_of_a_missing_key_lists_the_top_level_keys() -> None:
    flat = flatten({"model": {}, "optimizer": {}})
    with pytest.raises(ConfigError, match=r"'nope'.*model, optimizer"):
        select(flat.skeleton, ["nope"])


def test_select_refuses_a_bare_string() -> None:
    with pytest.raises(ConfigError, match="list of key paths"):
        select(flatten({"model": 1}).skeleton, "model")  # type: ignore[arg-type]


def test_tensor_kinds_lists_tensor_leaves_in_tree_order() -> None:
    flat = flatten({"b": np.zeros(1), "a": [np.ones(1), 2]})
    assert tensor_kinds(flat.skeleton) == {"b": "numpy", "a.0": "numpy"}


@pytest.mark.parametrize(
    "skeleton",
    [
        {"dict": [["a", 1], ["a", 2]]},
        {"dict": [[1.5, 1]]},
        {"dict": "x"},
        {"tensor": "pickle"},
        {"list": [{"bogus": []}]},
        {"dict": [["a", {"tensor": "numpy", "code": "rm -rf"}]]},
        [1, 2],
    ],
)
def test_tensor_kinds_refuses_malformed_skeletons(skeleton: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        tensor_kinds(skeleton)


def test_flat_tree_holds_the_live_arrays() -> None:
    a = np.zeros(3)
    flat = flatten({"a": a})
    assert isinstance(flat, FlatTree)
    assert flat.tensors["a"] is a


def test_numpy_only_tree_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from highmark.state.tree import flatten, unflatten\n"
        "f = flatten({'a': np.zeros(2), 'b': [1.0]})\n"
        "unflatten(f.skeleton, f.tensors)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_codec_is_resolved_lazily_by_name() -> None:
    code = (
        "import sys\n"
        "from highmark.state.leafcodecs import codec_for_kind\n"
        "assert 'highmark.state.torch' not in sys.modules\n"
        "codec = codec_for_kind('torch')\n"
        "assert codec.kind == 'torch' and 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
numpy_leaves = st.sampled_from(
    ["float64", "float32", "float16", "int64", "int8", "uint16", "bool", "complex128"]
).flatmap(
    lambda dt: st.lists(st.integers(0, 255), max_size=12).map(
        lambda xs: np.frombuffer(bytes(xs) * np.dtype(dt).itemsize, dtype=dt)[: len(xs)].copy()
    )
)
keys = st.one_of(st.text(max_size=6), st.integers(-5, 1000))
trees = st.recursive(
    st.one_of(json_scalars, numpy_leaves),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=20,
)


def flatten_unless_colliding(tree: Any) -> FlatTree | None:
    """flatten(), or None for a tree that two entries share a key path in ({1: .., "1": ..})."""
    try:
        return flatten(tree)
    except UnsupportedStateError as exc:
        if "key path" not in str(exc):
            raise
        return None


@settings(max_examples=150, deadline=None)
@given(trees)
def test_arbitrary_trees_round_trip_exactly(tree: Any) -> None:
    flat = flatten_unless_colliding(tree)
    if flat is not None:
        assert_same(unflatten(json.loads(json.dumps(flat.skeleton)), flat.tensors), tree)


def test_flatten_records_each_tensor_kind_as_the_skeleton_says() -> None:
    state = {"m": {"w": np.ones(2)}, "opt": [np.zeros(3), 1.5], "s": np.float32(2.0)}
    flat = flatten(state)
    assert flat.kinds == {"m.w": "numpy", "opt.0": "numpy", "s": "numpy"}
    assert flat.tensor_kinds() == tensor_kinds(flat.skeleton)
