"""Durable key-value storage for one core: one SQLite file per node (or per shard).

A core describes what must survive a crash as `Persist(key, value)` records; the host
applies all the records of a step (or of a group of steps, see `synod.runtime.host`) in
one SQLite transaction *before* any message of those steps leaves the node, and rebuilds
the core after a restart from `load()`, which returns exactly the committed records.

Durability settings, and why:

- ``journal_mode=WAL``: a commit appends to the write-ahead log and fsyncs it once,
  instead of rewriting pages of the main file; readers (for example a monitoring tool or
  a test reading the file through its own connection) never block the writer.
- ``synchronous=FULL``: in WAL mode every commit fsyncs the log before ``COMMIT``
  returns.  ``NORMAL`` would survive a process crash but could lose the last commits on a
  power failure or kernel panic; a vote that was sent and then lost that way lets the
  restarted node vote again, which is a safety violation, so synod pays the fsync.

The file carries SQLite's ``application_id`` so that a database written by some other
program is refused with a clear error instead of being silently reused.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from synod.core import Persist

APPLICATION_ID = 0x53594E44  # "SYND"
"""Written into the SQLite header so synod recognises its own files."""

SCHEMA_VERSION = 1

_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
)
_UPSERT = (
    "INSERT INTO records (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM records WHERE key = ?"


class StorageError(Exception):
    """The database file cannot be opened, read or written; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


_WAL_MAGIC = (0x377F0682, 0x377F0683)
"""The first four bytes (big-endian) of a SQLite write-ahead log."""


def _check_write_ahead_log(path: Path) -> None:
    """Refuse a ``-wal`` file that is not a write-ahead log: SQLite would silently ignore
    it, and with it every commit it may have held."""
    wal = path.with_name(path.name + "-wal")
    try:
        with wal.open("rb") as handle:
            header = handle.read(32)
    except FileNotFoundError:
        return
    except OSError as error:
        raise StorageError(path, f"cannot read its write-ahead log {wal.name}: {error}") from None
    if header and (len(header) < 32 or int.from_bytes(header[:4], "big") not in _WAL_MAGIC):
        raise StorageError(
            path,
            f"its write-ahead log {wal.name} is not a SQLite log (damaged or foreign); "
            "move it away only if the commits it held may be lost",
        )


class SqliteStorage:
    """A core's persisted records in one SQLite file (WAL, synchronous=FULL).

    The host uses it from one task at a time, possibly on a worker thread. A stop may
    cancel that task while its worker thread is still writing: `close` then waits for
    the write (closing a SQLite connection under a running statement crashed the
    process), and every call holds one lock for its whole use of the connection.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection
        self._using = threading.Lock()

    @classmethod
    def open(cls, path: Path | str) -> SqliteStorage:
        """Open (creating if needed) the store at `path`; raises `StorageError`."""
        path = Path(path)
        if not path.parent.is_dir():
            raise StorageError(path, "the directory does not exist")
        _check_write_ahead_log(path)
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE / COMMIT).
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise StorageError(path, f"cannot open database: {error}") from None
        try:
            _prepare(path, connection)
        except BaseException:
            connection.close()
            raise
        return cls(path, connection)

    def apply(self, records: Iterable[Persist]) -> None:
        """Make every record durable in one transaction (`value=None` deletes the key).

        When this returns, the records are committed and fsynced; when it raises
        `StorageError`, none of them is.
        """
        batch = list(records)
        if not batch:
            return
        with self._using:
            self._apply(self._require_open(), batch)

    def _apply(self, connection: sqlite3.Connection, batch: list[Persist]) -> None:
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for record in batch:
                    if record.value is None:
                        connection.execute(_DELETE, (record.key,))
                    else:
                        connection.execute(_UPSERT, (record.key, record.value))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise StorageError(self.path, f"cannot write records: {error}") from None

    def load(self) -> dict[bytes, bytes]:
        """Every committed record: what the core is rebuilt from."""
        with self._using:
            connection = self._require_open()
            try:
                rows = connection.execute("SELECT key, value FROM records").fetchall()
            except sqlite3.Error as error:
                raise StorageError(self.path, f"cannot read records: {error}") from None
        return {bytes(key): bytes(value) for key, value in rows}

    def close(self) -> None:
        """Checkpoint the log into the main file and close; idempotent. Waits for a
        write in progress on another thread."""
        with self._using:
            connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # the log stays valid; the next open replays it
        finally:
            connection.close()

    @property
    def closed(self) -> bool:
        return self._connection is None

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _require_open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError(f"{self.path}: storage is closed")
        return self._connection


def _prepare(path: Path, connection: sqlite3.Connection) -> None:
    """Set durability, check that the file is synod's, create the table."""
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        schema_version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as error:
        raise StorageError(path, f"not a readable SQLite database ({error})") from None
    if tables and application_id != APPLICATION_ID:
        raise StorageError(
            path,
            f"not a synod store (application_id {application_id:#x}, expected {APPLICATION_ID:#x})",
        )
    if tables and schema_version > SCHEMA_VERSION:
        raise StorageError(
            path,
            f"written by a newer synod (schema {schema_version}, this one reads {SCHEMA_VERSION})",
        )
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(path, f"cannot enable write-ahead logging (mode {mode})")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.execute(_CREATE_TABLE)
    except sqlite3.DatabaseError as error:
        raise StorageError(path, f"cannot initialise the store: {error}") from None
