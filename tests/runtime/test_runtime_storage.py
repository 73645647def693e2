"""SQLite store: records survive reopening, batches are atomic, bad files are named."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from synod.core import Persist
from synod.runtime.storage import SqliteStorage, StorageError


def test_applied_records_are_loaded_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with SqliteStorage.open(path) as storage:
        storage.apply([Persist(b"a", b"1"), Persist(b"b", b"2")])
        storage.apply([Persist(b"a", b"3")])
    with SqliteStorage.open(path) as storage:
        assert storage.load() == {b"a": b"3", b"b": b"2"}


def test_none_value_deletes_the_key(tmp_path: Path) -> None:
    with SqliteStorage.open(tmp_path / "node.sqlite") as storage:
        storage.apply([Persist(b"a", b"1"), Persist(b"b", b"2")])
        storage.apply([Persist(b"a", None), Persist(b"missing", None)])
        assert storage.load() == {b"b": b"2"}


def test_later_record_of_a_batch_wins_for_one_key(tmp_path: Path) -> None:
    with SqliteStorage.open(tmp_path / "node.sqlite") as storage:
        storage.apply([Persist(b"k", b"old"), Persist(b"k", None), Persist(b"k", b"new")])
        assert storage.load() == {b"k": b"new"}


def test_a_failing_batch_leaves_no_record_of_it(tmp_path: Path) -> None:
    with SqliteStorage.open(tmp_path / "node.sqlite") as storage:
        storage.apply([Persist(b"kept", b"1")])
        # The third record cannot be bound to an SQL parameter: the batch must roll back.
        bad = Persist(b"c", object())  # type: ignore[arg-type]
        with pytest.raises(StorageError, match="cannot write"):
            storage.apply([Persist(b"a", b"1"), Persist(b"kept", None), bad])
        assert storage.load() == {b"kept": b"1"}
        storage.apply([Persist(b"after", b"2")])  # still usable after the rollback
        assert storage.load() == {b"kept": b"1", b"after": b"2"}


def test_committed_records_are_visible_to_a_separate_connection(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with SqliteStorage.open(path) as storage:
        storage.apply([Persist(b"vote", b"yes")])
        reader = sqlite3.connect(path)
        try:
            rows = reader.execute("SELECT key, value FROM records").fetchall()
            mode = reader.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            reader.close()
    assert rows == [(b"vote", b"yes")]
    assert mode == "wal"


def test_store_uses_full_synchronous_commits(tmp_path: Path) -> None:
    with SqliteStorage.open(tmp_path / "node.sqlite") as storage:
        connection = storage._require_open()
        # PRAGMA synchronous: 2 is FULL (SQLite documentation).
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_corrupt_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    path.write_bytes(b"this is not an SQLite database, just text " * 200)
    with pytest.raises(StorageError) as caught:
        SqliteStorage.open(path)
    assert str(path) in str(caught.value)


def test_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE accounts (name TEXT)")
    other.commit()
    other.close()
    with pytest.raises(StorageError, match="not a synod store") as caught:
        SqliteStorage.open(path)
    assert str(path) in str(caught.value)


def test_missing_directory_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "node.sqlite"
    with pytest.raises(StorageError, match="directory does not exist") as caught:
        SqliteStorage.open(path)
    assert caught.value.path == path


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_is_refused_naming_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "locked"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(StorageError) as caught:
            SqliteStorage.open(directory / "node.sqlite")
        assert str(directory / "node.sqlite") in str(caught.value)
    finally:
        directory.chmod(0o700)


def test_read_only_file_is_refused_on_write_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    SqliteStorage.open(path).close()
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    uri_storage = SqliteStorage(path, read_only)
    with pytest.raises(StorageError, match="cannot write") as caught:
        uri_storage.apply([Persist(b"a", b"1")])
    assert str(path) in str(caught.value)
    uri_storage.close()


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    storage = SqliteStorage.open(tmp_path / "node.sqlite")
    storage.close()
    storage.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        storage.load()


def test_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    SqliteStorage.open(path).close()
    other = sqlite3.connect(path)
    other.execute("PRAGMA user_version=99")
    other.commit()
    other.close()
    with pytest.raises(StorageError, match="newer synod") as caught:
        SqliteStorage.open(path)
    assert caught.value.path == path


def test_damaged_store_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with SqliteStorage.open(path) as storage:
        storage.apply([Persist(b"k%d" % n, b"v" * 500) for n in range(200)])
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # overwrite the second page (part of the table)
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError) as caught:
        SqliteStorage.open(path).load()
    assert str(path) in str(caught.value)


def test_a_garbage_write_ahead_log_is_refused_not_ignored(tmp_path: Path) -> None:
    """SQLite ignores a -wal file without its magic number, and every commit in it."""
    path = tmp_path / "node.sqlite"
    store = SqliteStorage.open(path)
    store.apply([Persist(b"k", b"v")])
    store.close()
    (tmp_path / "node.sqlite-wal").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(StorageError, match=r"node\.sqlite-wal is not a SQLite log"):
        SqliteStorage.open(path)


def test_a_real_write_ahead_log_left_by_a_crash_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = SqliteStorage.open(path)
    store.apply([Persist(b"k", b"v")])
    # no close: the commit stays in the -wal file, as after a SIGKILL
    assert (tmp_path / "node.sqlite-wal").stat().st_size > 0
    reopened = SqliteStorage.open(path)
    assert reopened.load() == {b"k": b"v"}
    reopened.close()
    store.close()


_CLOSE_DURING_A_WRITE = """
import sys, threading
from pathlib import Path
from synod.core import Persist
from synod.runtime.storage import SqliteStorage
path = Path(sys.argv[1])
storage = SqliteStorage.open(path)
inside, release = threading.Event(), threading.Event()
def progress():
    if not inside.is_set():
        inside.set()
        release.wait(10)  # the write pauses inside SQLite until released
    return 0
storage._connection.set_progress_handler(progress, 1)
writer = threading.Thread(target=storage.apply, args=([Persist(b"key", b"value")],))
writer.start()
assert inside.wait(10)
closer = threading.Thread(target=storage.close)
closer.start()
closer.join(0.3)  # room for a close that does not wait to run under the statement
release.set()
writer.join()
closer.join()
again = SqliteStorage.open(path)
print(again.load())
again.close()
"""


def test_closing_during_a_write_on_a_worker_thread_waits_for_it(tmp_path: Path) -> None:
    # A node's stop cancels the task whose worker thread may still be writing, then
    # closes the store.  Before, the connection was closed under the running
    # statement and the process died of SIGSEGV (a Ctrl-C of `synod crdt run`); now
    # close waits for the write, and the record is durable.
    done = subprocess.run(
        [sys.executable, "-c", _CLOSE_DURING_A_WRITE, str(tmp_path / "store.sqlite")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "{b'key': b'value'}"
