"""Storage backends on memory, local disk and S3: paths, atomic writes, commit, locks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from highmark.errors import ConfigError, CorruptCheckpointError, LockedError
from highmark.store.local import LocalStorage, open_storage
from highmark.store.objectstore import FsspecStorage, MemoryStorage
from highmark.store.storage import COMMIT_MARKER, LOCK_NAME, check_relpath


@pytest.mark.parametrize(
    "rel", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "C:x", "a/\x00"]
)
def test_check_relpath_refuses_paths_escaping_the_run(rel: str) -> None:
    with pytest.raises(CorruptCheckpointError, match="not a plain relative path"):
        check_relpath(rel)


def test_storage_refuses_escaping_paths_on_every_operation(storage: Any) -> None:
    for op in (storage.read_bytes, storage.exists, storage.remove, storage.remove_tree):
        with pytest.raises(CorruptCheckpointError):
            op("../outside")
    with pytest.raises(CorruptCheckpointError):
        storage.write_bytes("/abs", b"x")


def test_write_then_read_round_trips_bytes(storage: Any) -> None:
    storage.write_bytes("a/b.bin", b"hello")
    assert storage.read_bytes("a/b.bin") == b"hello"
    assert storage.size("a/b.bin") == 5
    assert storage.exists("a/b.bin")
    assert storage.listdir("a") == ["b.bin"]


def test_open_write_streams_and_open_read_supports_seek_and_readinto(storage: Any) -> None:
    with storage.open_write("d/f.bin") as f:
        f.write(b"0123")
        f.write(b"456789")
    with storage.open_read("d/f.bin") as f:
        f.seek(4)
        buf = bytearray(3)
        assert f.readinto(buf) == 3
    assert bytes(buf) == b"456"


def test_open_write_removes_the_partial_file_on_error(storage: Any) -> None:
    def write_half() -> None:
        with storage.open_write("d/partial.bin") as f:
            f.write(b"half")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_half()
    assert not storage.exists("d/partial.bin")


def test_replace_atomic_replaces_the_whole_content(storage: Any) -> None:
    storage.replace_atomic("index.json", b"one")
    storage.replace_atomic("index.json", b"two-longer")
    assert storage.read_bytes("index.json") == b"two-longer"
    assert [n for n in storage.listdir() if n.startswith(".tmp")] == []


def test_listdir_of_missing_dir_is_empty(storage: Any) -> None:
    assert storage.listdir("nope") == []


def test_remove_tree_removes_everything_below(storage: Any) -> None:
    storage.write_bytes("t/a", b"1")
    storage.write_bytes("t/sub/b", b"2")
    storage.remove_tree("t")
    assert not storage.exists("t/a")
    assert not storage.exists("t/sub/b")
    assert "t" not in storage.listdir()


def test_staged_dir_is_invisible_until_committed(storage: Any) -> None:
    staging = storage.staging_dir("step-00000001")
    storage.write_bytes(f"{staging}/x.bin", b"data")
    assert not storage.is_committed("step-00000001")
    storage.commit_dir(staging, "step-00000001")
    assert storage.is_committed("step-00000001")
    assert storage.read_bytes("step-00000001/x.bin") == b"data"


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.s3)])
def object_storage(request: pytest.FixtureRequest) -> Any:
    """An object-store backend: the in-memory double and S3."""
    if request.param == "memory":
        return MemoryStorage()
    url = request.getfixturevalue("s3_url")
    return FsspecStorage(url, request.getfixturevalue("s3_storage_options"))


def test_object_stores_commit_with_a_marker_written_last(object_storage: Any) -> None:
    object_storage.write_bytes("step-00000002/x.bin", b"data")
    assert not object_storage.is_committed("step-00000002")
    object_storage.commit_dir("step-00000002", "step-00000002")
    assert object_storage.exists(f"step-00000002/{COMMIT_MARKER}")
    assert object_storage.is_committed("step-00000002")


def test_object_store_remove_tree_uncommits_first(object_storage: Any) -> None:
    object_storage.write_bytes("step-00000003/x.bin", b"data")
    object_storage.commit_dir("step-00000003", "step-00000003")
    object_storage.remove_tree("step-00000003")
    assert not object_storage.is_committed("step-00000003")
    assert object_storage.listdir() == []


def test_object_lock_refresh_rewrites_the_time(object_storage: Any) -> None:
    import json

    lock = object_storage.lock("writer")
    object_storage.write_bytes(
        LOCK_NAME,
        json.dumps({**json.loads(object_storage.read_bytes(LOCK_NAME)), "time": 0.0}).encode(),
    )
    lock.refresh()
    assert json.loads(object_storage.read_bytes(LOCK_NAME))["time"] > 0.0
    lock.release()
    assert not object_storage.exists(LOCK_NAME)


def test_local_commit_over_an_existing_dir_replaces_it(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for content in (b"old", b"new"):
        staging = storage.staging_dir("step-00000001")
        storage.write_bytes(f"{staging}/x.bin", content)
        storage.commit_dir(staging, "step-00000001")
    assert storage.read_bytes("step-00000001/x.bin") == b"new"
    assert storage.listdir() == ["step-00000001"]


def test_local_recover_removes_staging_leftovers(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    staging = storage.staging_dir("step-00000001")
    storage.write_bytes(f"{staging}/x.bin", b"partial")
    assert storage.recover() == [staging]
    assert storage.listdir() == []


def test_local_recover_restores_a_checkpoint_moved_aside_by_an_interrupted_replace(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    # The state a crash between the two renames of commit_dir leaves behind.
    storage.write_bytes(".old-step-00000007-0123abcd/x.bin", b"old")
    storage.recover()
    assert storage.read_bytes("step-00000007/x.bin") == b"old"


def test_local_free_bytes_reports_the_disk(tmp_path: Path) -> None:
    free = LocalStorage(tmp_path / "not-yet").free_bytes()
    assert free is not None
    assert free > 0


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(open_storage("memory://x/run"), FsspecStorage)
    mem = MemoryStorage()
    assert open_storage(mem) is mem


def test_open_storage_refuses_options_for_local_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="storage_options"):
        open_storage(tmp_path, {"key": "x"})


def test_second_lock_on_a_held_run_names_the_holder(storage: Any) -> None:
    lock = storage.lock("first")
    with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        storage.lock("second")
    lock.release()
    storage.lock("third").release()


_HOLD = textwrap.dedent(
    """
    import json, sys
    from highmark.store.local import open_storage
    opts = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    lock = open_storage(sys.argv[1], opts).lock("child")
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def _lock_holder(url: str, options: dict[str, Any] | None) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", _HOLD, url] + ([json.dumps(options)] if options else [])
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked"
    return child


def _storage_of(url: str, options: dict[str, Any] | None) -> Any:
    return open_storage(url, options)


def test_lock_held_by_another_process_raises_locked_error(run_location: Any) -> None:
    child = _lock_holder(run_location.url, run_location.storage_options)
    try:
        with pytest.raises(LockedError, match=f"pid {child.pid}"):
            _storage_of(run_location.url, run_location.storage_options).lock("parent")
    finally:
        child.kill()
        child.wait()


def test_lock_of_a_killed_holder_is_not_stale(run_location: Any) -> None:
    child = _lock_holder(run_location.url, run_location.storage_options)
    child.kill()  # SIGKILL: no cleanup runs in the holder
    child.wait()
    storage = _storage_of(run_location.url, run_location.storage_options)
    if storage.is_local:
        assert storage.exists(LOCK_NAME)  # the file stays; the flock died with the process
    storage.lock("parent").release()


def test_object_lock_older_than_ttl_is_taken_over() -> None:
    storage = MemoryStorage(lock_ttl=60.0)
    storage.write_bytes(
        LOCK_NAME, b'{"pid": 1, "host": "elsewhere", "time": 0.0, "owner": "old", "token": "t"}'
    )
    storage.lock("new").release()


def test_object_lock_of_a_live_holder_elsewhere_within_ttl_is_respected() -> None:
    import json
    import time

    storage = MemoryStorage(lock_ttl=60.0)
    record = {"pid": 1, "host": "elsewhere", "time": time.time(), "owner": "old", "token": "t"}
    storage.write_bytes(LOCK_NAME, json.dumps(record).encode())
    with pytest.raises(LockedError, match="host elsewhere"):
        storage.lock("new")


def test_the_object_store_backends_do_not_import_the_local_backend() -> None:
    code = "import sys, highmark.store.objectstore; print('highmark.store.local' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
