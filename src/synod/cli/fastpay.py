"""`synod fastpay`: FastPay authorities (one process per shard), clients and a benchmark.

The commands follow the reference implementation's quickstart (asonnino/fastpay):

- ``synod fastpay server --server server1.json generate --host H --port P --shards S``
  writes the authority's key file and prints its committee line (append it to
  ``committee.json`` with ``>>``);
- ``synod fastpay client --committee committee.json --accounts accounts.json
  create-accounts N --initial-funding X`` adds N wallets to ``accounts.json`` and prints
  one ``ADDRESS:BALANCE`` line per account (append them to ``initial_accounts.txt``);
- ``synod fastpay server --server server1.json run --shard I --initial-accounts
  initial_accounts.txt --committee committee.json`` runs shard I (port P + I) from its
  own SQLite file until SIGINT/SIGTERM;
- ``synod fastpay client ... query-balance ADDRESS``, ``... transfer AMOUNT --from A
  --to B`` and ``... benchmark`` drive the sans-I/O `synod.fastpay.client.Client` of
  each account over TCP, keeping the wallets (the clients' records) in the accounts file;
- ``synod fastpay bench`` measures one authority's shards on this machine against the
  cost of the signatures they must check and make.

Every file format is described in ``docs/fastpay.md``.  Errors in files or arguments,
unknown accounts, unreachable authorities: a one-line message on stderr and exit status
1 (2 for usage and configuration errors), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    lock_exclusively,
    log_level_option,
    print_json_line,
    run_process,
    serve_until_stopped,
)

if TYPE_CHECKING:
    from synod.crypto import KeyPair, NodeId
    from synod.fastpay.client import Client
    from synod.quorum.committee import Committee
    from synod.runtime.rpc import RpcClient

EXIT_FAILED = 1
EXIT_CONFIG = 2
DEFAULT_TIMEOUT_MS = 10_000
MAX_ACCOUNTS_PER_CREATE = 100_000


class ConfigError(click.ClickException):
    """A file does not hold what it should: the message names the file, line and key."""

    exit_code = EXIT_CONFIG


class CommandFailed(click.ClickException):
    """The command could not do what was asked (authorities down, refusals...)."""

    exit_code = EXIT_FAILED


# ---------------------------------------------------------------- file formats


@dataclass(frozen=True, slots=True)
class AuthorityEntry:
    """One line of ``committee.json``: an authority and where its shards listen."""

    name: NodeId
    host: str
    port: int
    shards: int
    weight: int = 1

    def address(self, shard: int) -> tuple[str, int]:
        """Shard `shard` listens on the base port plus its index."""
        return (self.host, self.port + shard)

    def to_json(self) -> dict[str, Any]:
        from synod.crypto import node_id_text

        return {
            "name": node_id_text(self.name),
            "host": self.host,
            "port": self.port,
            "shards": self.shards,
            "weight": self.weight,
        }


def _integer(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _authority_from_json(where: str, raw: object) -> AuthorityEntry:
    from synod.crypto import InvalidNodeId, parse_node_id
    from synod.fastpay.messages import MAX_SHARDS

    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    unknown = sorted(set(raw) - {"name", "host", "port", "shards", "weight"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: name: expected an authority id string, got {name!r}")
    try:
        node_id = parse_node_id(name)
    except InvalidNodeId as error:
        raise ConfigError(f"{where}: name: {error}") from None
    host = raw.get("host")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{where}: host: expected a non-empty string, got {host!r}")
    shards = _integer(raw.get("shards"), 1, MAX_SHARDS)
    if shards is None:
        raise ConfigError(f"{where}: shards: expected an integer 1..{MAX_SHARDS}")
    port = _integer(raw.get("port"), 1, 65535 - shards + 1)
    if port is None:
        raise ConfigError(f"{where}: port: expected an integer 1..{65535 - shards + 1}")
    weight = _integer(raw.get("weight", 1), 1, 2**32 - 1)
    if weight is None:
        raise ConfigError(f"{where}: weight: expected a positive integer")
    return AuthorityEntry(node_id, host, port, shards, weight)


def _json_lines(path: Path, what: str) -> Iterable[tuple[str, object]]:
    """(``file:line``, parsed JSON) for each non-empty line of `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the {what} file: {error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where}: not a JSON line: {error.msg}") from None


@dataclass(frozen=True, slots=True)
class CommitteeFile:
    """``committee.json``: one authority per line (as ``server generate`` prints them)."""

    path: Path
    authorities: tuple[AuthorityEntry, ...]

    @classmethod
    def load(cls, path: Path) -> CommitteeFile:
        entries: list[AuthorityEntry] = []
        addresses: set[tuple[str, int]] = set()
        names: set[bytes] = set()
        for where, raw in _json_lines(path, "committee"):
            entry = _authority_from_json(where, raw)
            if entry.name in names:
                raise ConfigError(f"{where}: name: this authority is listed twice")
            ports = {entry.address(shard) for shard in range(entry.shards)}
            if ports & addresses:
                raise ConfigError(f"{where}: port: overlaps another authority's shard ports")
            names.add(entry.name)
            addresses |= ports
            entries.append(entry)
        if not entries:
            raise ConfigError(f"{path}: no authorities (add lines with `server generate`)")
        return cls(path, tuple(entries))

    def committee(self) -> Committee:
        from synod.quorum.committee import Committee

        return Committee({entry.name: entry.weight for entry in self.authorities})

    def find(self, name: bytes) -> AuthorityEntry | None:
        return next((entry for entry in self.authorities if entry.name == name), None)


@dataclass(frozen=True, slots=True)
class ServerFile:
    """``server1.json``: the authority's secret key and its committee line (mode 0600)."""

    path: Path
    keys: KeyPair
    authority: AuthorityEntry

    @classmethod
    def load(cls, path: Path) -> ServerFile:
        from synod.crypto import KeyPair

        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such server file (make one with `generate`)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: not a server file: {error}") from None
        if not isinstance(raw, dict) or set(raw) != {"authority", "secret_key"}:
            raise ConfigError(f"{path}: expected an object with 'authority' and 'secret_key'")
        authority = _authority_from_json(f"{path}: authority", raw["authority"])
        seed = _hex_bytes(raw["secret_key"], 32)
        if seed is None:
            raise ConfigError(f"{path}: secret_key: expected 64 hexadecimal digits")
        keys = KeyPair.from_seed(seed)
        if keys.node_id != authority.name:
            raise ConfigError(f"{path}: secret_key: not the key of authority.name")
        return cls(path, keys, authority)


def _hex_bytes(value: object, length: int | None = None) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        return None
    if length is not None and len(decoded) != length:
        return None
    return decoded


def _parse_account(text: str, where: str) -> NodeId:
    from synod.crypto import InvalidNodeId, parse_node_id

    try:
        return parse_node_id(text.strip())
    except InvalidNodeId as error:
        raise ConfigError(f"{where}: not an account address: {error}") from None


def load_initial_accounts(path: Path) -> dict[bytes, int]:
    """``initial_accounts.txt``: one ``ADDRESS:BALANCE`` line per funded account."""
    from synod.fastpay.messages import MAX_BALANCE

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such initial accounts file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    genesis: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        address, separator, amount = line.partition(":")
        if not separator:
            raise ConfigError(f"{where}: expected ADDRESS:BALANCE, got {line[:80]!r}")
        account = _parse_account(address, where)
        try:
            balance = int(amount.strip())
        except ValueError:
            raise ConfigError(f"{where}: balance: expected an integer, got {amount!r}") from None
        if not 0 <= balance <= MAX_BALANCE:
            raise ConfigError(f"{where}: balance: expected 0..{MAX_BALANCE}")
        if account in genesis:
            raise ConfigError(f"{where}: this account is listed twice")
        genesis[bytes(account)] = balance
    return genesis


@dataclass(slots=True)
class Wallet:
    """One account of ``accounts.json``: its key, initial funding and client records."""

    keys: KeyPair
    initial_balance: int
    records: dict[bytes, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        from synod.crypto import node_id_text

        return {
            "address": node_id_text(self.keys.node_id),
            "secret_key": self.keys.seed.hex(),
            "initial_balance": self.initial_balance,
            "records": {key.hex(): value.hex() for key, value in sorted(self.records.items())},
        }


class AccountsFile:
    """``accounts.json``: one wallet per line, rewritten atomically (fsync, rename).

    A second client process on the same file waits for the first (a lock file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wallets: dict[bytes, Wallet] = {}
        self.dirty = False
        self._lock: Any = None

    def lock(self) -> None:
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = lock_path.open("a")
        except OSError as error:
            raise ConfigError(f"{lock_path}: cannot open the lock file: {error}") from None
        fcntl.flock(handle, fcntl.LOCK_EX)
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self, *, missing_ok: bool = False) -> None:
        from synod.crypto import KeyPair

        if missing_ok and not self.path.exists():
            return
        for where, raw in _json_lines(self.path, "accounts"):
            if not isinstance(raw, dict) or not {"address", "secret_key"} <= set(raw):
                raise ConfigError(f"{where}: expected an object with address and secret_key")
            seed = _hex_bytes(raw["secret_key"], 32)
            if seed is None:
                raise ConfigError(f"{where}: secret_key: expected 64 hexadecimal digits")
            keys = KeyPair.from_seed(seed)
            address = raw["address"]
            if not isinstance(address, str) or _parse_account(address, where) != keys.node_id:
                raise ConfigError(f"{where}: address: not the account of secret_key")
            initial = _integer(raw.get("initial_balance", 0), 0, 2**63 - 1)
            if initial is None:
                raise ConfigError(f"{where}: initial_balance: expected an integer 0..2^63-1")
            records_raw = raw.get("records", {})
            if not isinstance(records_raw, dict):
                raise ConfigError(f"{where}: records: expected an object")
            records: dict[bytes, bytes] = {}
            for key_hex, value_hex in records_raw.items():
                key, value = _hex_bytes(key_hex), _hex_bytes(value_hex)
                if key is None or value is None:
                    raise ConfigError(f"{where}: records: expected hexadecimal keys and values")
                records[key] = value
            if keys.node_id in self.wallets:
                raise ConfigError(f"{where}: this account is listed twice")
            self.wallets[keys.node_id] = Wallet(keys, initial, records)

    def wallet(self, account: bytes) -> Wallet:
        from synod.crypto import node_id_text

        wallet = self.wallets.get(bytes(account))
        if wallet is None:
            raise CommandFailed(f"unknown account {node_id_text(account)}: not in {self.path}")
        return wallet

    def apply(self, account: bytes, records: Iterable[Any]) -> None:
        """Apply a client's `Persist` records to its wallet (in memory until `save`)."""
        wallet = self.wallets[bytes(account)]
        for record in records:
            self.dirty = True
            if record.value is None:
                wallet.records.pop(record.key, None)
            else:
                wallet.records[record.key] = record.value

    def save(self) -> None:
        """Write every wallet durably: a temporary file, fsync, rename, fsync the folder."""
        text = "".join(json.dumps(w.to_json()) + "\n" for w in self.wallets.values())
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            raise CommandFailed(f"{self.path}: cannot write the accounts file: {error}") from None
        self.dirty = False


# ---------------------------------------------------------------- the command group


@click.group()
def fastpay() -> None:
    """FastPay: authorities sharded over processes, clients, benchmarks."""


@fastpay.group("server")
@click.option(
    "--server",
    "server_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The authority's key file (written by generate).",
)
@click.pass_context
def server(context: click.Context, server_path: Path) -> None:
    """One authority: generate its key file, run one of its shards."""
    context.obj = server_path


@server.command("generate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of every shard.")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Port of shard 0.")
@click.option("--shards", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--weight", type=click.IntRange(1, 2**32 - 1), default=1, show_default=True)
@click.pass_obj
def generate(server_path: Path, host: str, port: int, shards: int, weight: int) -> None:
    """Write a new authority key file; print its committee.json line (append with >>)."""
    from synod.crypto import KeyPair

    if port + shards - 1 > 65535:
        raise click.BadParameter("port + shards - 1 must stay within 65535", param_hint="--port")
    keys = KeyPair.generate()
    entry = AuthorityEntry(keys.node_id, host, port, shards, weight)
    document = {"authority": entry.to_json(), "secret_key": keys.seed.hex()}
    try:
        descriptor = os.open(server_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandFailed(f"{server_path}: already exists; refusing to overwrite") from None
    except OSError as error:
        raise CommandFailed(f"{server_path}: cannot create: {error}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2) + "\n")
    click.echo(json.dumps(entry.to_json()))


@server.command("run")
@click.option("--shard", type=click.IntRange(0, 1023), required=True)
@click.option(
    "--initial-accounts",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="ADDRESS:BALANCE lines (the genesis; the same at every start).",
)
@click.option("--committee", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--storage",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file of this shard [default: <server file>.shard-<I>.sqlite].",
)
@log_level_option(default="warning")
@click.pass_obj
def run(  # noqa: PLR0917 - one parameter per click option
    server_path: Path,
    shard: int,
    initial_accounts: Path,
    committee: Path,
    storage: Path | None,
    log_level: str,
) -> None:
    """Run one shard of this authority until SIGINT/SIGTERM (exit 0)."""
    server_file = ServerFile.load(server_path)
    committee_file = CommitteeFile.load(committee)
    entry = committee_file.find(server_file.keys.node_id)
    if entry is None:
        raise ConfigError(f"{committee}: this authority ({server_path}) is not listed")
    if entry != server_file.authority:
        raise ConfigError(f"{committee}: this authority's line differs from {server_path}")
    if shard >= entry.shards:
        raise click.BadParameter(f"this authority has shards 0..{entry.shards - 1}")
    genesis = load_initial_accounts(initial_accounts)
    if storage is None:
        storage = server_path.with_name(f"{server_path.stem}.shard-{shard}.sqlite")
    host, port = entry.address(shard)
    run_process(
        _run_shard(server_file, committee_file, shard, genesis, storage),
        log_level,
        listen_failure=f"cannot listen on {host}:{port}",
    )


def shard_router(committee: CommitteeFile) -> Callable[[bytes, Any], tuple[str, int] | None]:
    """Route a `Call` to an authority to the shard that holds the request's account."""
    from synod.fastpay.messages import FastPayRequest, request_shard

    entries: dict[bytes, AuthorityEntry] = {
        bytes(entry.name): entry for entry in committee.authorities
    }

    def route(authority: bytes, request: FastPayRequest) -> tuple[str, int] | None:
        entry = entries.get(bytes(authority))
        if entry is None:
            return None
        address: tuple[str, int] = entry.address(request_shard(request, entry.shards))
        return address

    return route


async def _run_shard(
    server_file: ServerFile,
    committee_file: CommitteeFile,
    shard: int,
    genesis: dict[bytes, int],
    storage_path: Path,
) -> int:
    import logging

    from synod.crypto import node_id_text
    from synod.fastpay.authority import AuthorityShard
    from synod.fastpay.messages import MESSAGE_CODEC
    from synod.runtime.host import NodeHost
    from synod.runtime.storage import SqliteStorage
    from synod.wire import DecodeError

    log = logging.getLogger("synod.cli.fastpay")
    entry = server_file.authority
    lock_path = storage_path.with_name(storage_path.name + ".lock")
    try:
        lock = lock_exclusively(lock_path, "this shard")
    except OSError as error:
        raise CommandFailed(f"{lock_path}: cannot open the lock file: {error}") from None
    storage = SqliteStorage.open(storage_path)
    try:
        core = AuthorityShard(
            server_file.keys,
            committee_file.committee(),
            shard=shard,
            shard_count=entry.shards,
            genesis=genesis,
            storage=storage.load(),
        )
    except (DecodeError, AssertionError, ValueError) as error:
        storage.close()
        lock.close()
        reason = str(error) or type(error).__name__
        raise CommandFailed(f"{storage_path}: cannot rebuild the shard: {reason}") from None
    host = NodeHost(
        core,
        keys=server_file.keys,
        codec=MESSAGE_CODEC,
        storage=storage,
        route_call=shard_router(committee_file),
    )
    await host.start(rpc_listen=entry.address(shard))
    ready = {
        "event": "ready",
        "authority": node_id_text(entry.name),
        "shard": shard,
        "address": f"{entry.host}:{entry.port + shard}",
        "accounts": len(core.accounts),
        "storage": str(storage_path),
    }
    return await serve_until_stopped(
        host,
        ready,
        lock=lock,
        log=log,
        failure="shard failed",
        print_line=lambda line: print_json_line(line, ensure_ascii=True),
    )


# ---------------------------------------------------------------- the client driver


@dataclass(slots=True)
class _Operation:
    events: list[Any] = field(default_factory=list)
    done: asyncio.Future[list[Any]] | None = None
    started_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Command:
    command: Any
    operation: _Operation


class ClientDriver:
    """Drives the `Client` cores of the accounts file's wallets over TCP.

    All cores share one input queue and one task, like `synod.runtime.host.NodeHost`:
    each batch of inputs is handled, the wallets' records are written to the accounts
    file (one durable rewrite per batch), and only then are the batch's calls sent.
    A call that gets no answer within `timeout_ms` comes back as `CallFailed`; while
    an authority refuses connections the call is tried again until that deadline.
    """

    def __init__(self, committee: CommitteeFile, accounts: AccountsFile, timeout_ms: int) -> None:
        self.committee_file = committee
        self.committee = committee.committee()
        self.accounts = accounts
        self.timeout_s = timeout_ms / 1000
        self.route = shard_router(committee)
        self.cores: dict[bytes, Client] = {}
        self._operations: dict[bytes, _Operation] = {}
        self._inputs: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self._rpc: dict[tuple[str, int], RpcClient] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None

    def core(self, account: bytes) -> Client:
        from synod.crypto import node_id_text
        from synod.fastpay.client import Client
        from synod.wire import DecodeError

        key = bytes(account)
        core = self.cores.get(key)
        if core is None:
            wallet = self.accounts.wallet(key)
            try:
                core = Client(
                    wallet.keys,
                    self.committee,
                    balance=wallet.initial_balance,
                    storage=dict(wallet.records),
                )
            except (DecodeError, AssertionError, ValueError) as error:
                raise ConfigError(
                    f"{self.accounts.path}: the records of {node_id_text(key)} are damaged "
                    f"({error or type(error).__name__})"
                ) from None
            self.cores[key] = core
        return core

    async def __aenter__(self) -> ClientDriver:
        self._worker = asyncio.create_task(self._process())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._rpc.values():
            await client.close()
        if self.accounts.dirty:
            self.accounts.save()

    async def perform(self, account: bytes, command: Any) -> list[Any]:
        """Run one client command (`Pay`, `Resume`, `Query`, `Receive`...) to its end.

        Returns the events of the operation; a local refusal (insufficient known balance,
        a pending order) is returned as the `LocalError` itself.
        """
        key = bytes(account)
        self.core(key)
        loop = asyncio.get_running_loop()
        operation = _Operation(done=loop.create_future(), started_s=time.perf_counter())
        self._inputs.put_nowait((key, _Command(command, operation)))
        assert operation.done is not None
        return await operation.done

    async def _process(self) -> None:
        try:
            while True:
                batch = [await self._inputs.get()]
                while len(batch) < 512 and not self._inputs.empty():
                    batch.append(self._inputs.get_nowait())
                steps = self._run_batch(batch)
                if self.accounts.dirty:
                    await asyncio.to_thread(self.accounts.save)
                for account, step, busy, operation in steps:
                    self._apply(account, step, busy, operation)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.failure = error
            for operation in self._operations.values():
                if operation.done is not None and not operation.done.done():
                    operation.done.set_exception(error)

    def _run_batch(
        self, batch: list[tuple[bytes, Any]]
    ) -> list[tuple[bytes, Any, bool, _Operation | None]]:
        """Handle a batch; each step is paired with the operation it belongs to (a late
        answer handled before a new command's input belongs to none)."""
        from synod.core import LocalError, Proposed

        steps = []
        for account, item in batch:
            core = self.cores[account]
            event = item
            if isinstance(item, _Command):
                self._operations[account] = item.operation
                event = Proposed(item.command)
            try:
                step = core.handle(event, int(time.monotonic() * 1000))
            except LocalError as error:
                if isinstance(item, _Command):
                    self._finish(account, item.operation, [error])
                    continue
                raise
            self.accounts.apply(account, step.persist)
            steps.append((account, step, core.busy, self._operations.get(account)))
        return steps

    def _apply(self, account: bytes, step: Any, busy: bool, operation: _Operation | None) -> None:
        for call in step.outgoing:
            task = asyncio.get_running_loop().create_task(self._call(account, call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if operation is not None:
            operation.events.extend(step.events)
            if not busy:
                self._finish(account, operation, operation.events)

    def _finish(self, account: bytes, operation: _Operation, events: list[Any]) -> None:
        if self._operations.get(account) is operation:
            del self._operations[account]
        if operation.done is not None and not operation.done.done():
            operation.done.set_result(events)

    async def _call(self, account: bytes, call: Any) -> None:
        from synod.core import CallFailed, Response
        from synod.fastpay.messages import REPLY_CODEC, REQUEST_CODEC
        from synod.runtime.rpc import RpcClient, RpcFailure
        from synod.wire import DecodeError

        address = self.route(call.to, call.body)
        if address is None:
            self._inputs.put_nowait((account, CallFailed(call.to, call.request_id, "unknown")))
            return
        client = self._rpc.get(address)
        if client is None:
            client = self._rpc[address] = RpcClient(address)
        body = REQUEST_CODEC.encode(call.body)
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            result = await client.call(body, timeout_s=max(0.001, remaining))
            refused = isinstance(result, RpcFailure) and result.reason.startswith("cannot")
            if not refused or time.monotonic() + 0.05 >= deadline:
                break
            await asyncio.sleep(0.05)  # the authority is not listening (yet): try again
        if isinstance(result, RpcFailure):
            event: Any = CallFailed(call.to, call.request_id, result.reason)
        else:
            try:
                event = Response(call.to, call.request_id, REPLY_CODEC.decode(result.body))
            except DecodeError as error:
                event = CallFailed(call.to, call.request_id, f"undecodable reply: {error}")
        self._inputs.put_nowait((account, event))


# ---------------------------------------------------------------- client commands


@dataclass(frozen=True, slots=True)
class _ClientContext:
    committee: Path
    accounts: Path
    timeout_ms: int

    def open(self, *, missing_ok: bool = False) -> tuple[CommitteeFile, AccountsFile]:
        committee = CommitteeFile.load(self.committee)
        accounts = AccountsFile(self.accounts)
        accounts.lock()
        accounts.load(missing_ok=missing_ok)
        return committee, accounts


class _ReferenceSpellings(click.Group):
    """Also accepts the reference's spellings (create_accounts, query_balance)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name.replace("_", "-"))


@fastpay.group("client", cls=_ReferenceSpellings)
@click.option("--committee", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--accounts",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The wallets (JSON lines; created by create-accounts).",
)
@click.option(
    "--timeout-ms",
    type=click.IntRange(1, 3_600_000),
    default=DEFAULT_TIMEOUT_MS,
    show_default=True,
    help="How long to wait for each authority's answer (and for it to start listening).",
)
@click.pass_context
def client(context: click.Context, committee: Path, accounts: Path, timeout_ms: int) -> None:
    """Account owners: create accounts, query balances, transfer, benchmark."""
    context.obj = _ClientContext(committee, accounts, timeout_ms)


@client.command("create-accounts")
@click.argument("count", type=click.IntRange(1, MAX_ACCOUNTS_PER_CREATE))
@click.option("--initial-funding", type=click.IntRange(0, 2**63 - 1), default=0)
@click.pass_obj
def create_accounts(context: _ClientContext, count: int, initial_funding: int) -> None:
    """Add COUNT new wallets; print ADDRESS:BALANCE lines (append to the genesis file)."""
    from synod.crypto import KeyPair, node_id_text

    committee, accounts = context.open(missing_ok=True)
    del committee  # checked so that a typo is caught before wallets are written
    created = []
    for _ in range(count):
        keys = KeyPair.generate()
        accounts.wallets[keys.node_id] = Wallet(keys, initial_funding)
        created.append(keys.node_id)
    accounts.save()
    accounts.unlock()
    for account in created:
        click.echo(f"{node_id_text(account)}:{initial_funding}")


def _run_client(context: _ClientContext, body: Callable[[ClientDriver], Any]) -> Any:
    committee, accounts = context.open()

    async def main() -> Any:
        async with ClientDriver(committee, accounts, context.timeout_ms) as driver:
            return await body(driver)

    try:
        return asyncio.run(main())
    finally:
        accounts.unlock()


@client.command("query-balance")
@click.argument("address")
@click.pass_obj
def query_balance(context: _ClientContext, address: str) -> None:
    """Print the balance of ADDRESS that a quorum of authorities vouches for."""
    from synod.fastpay.client import AccountQueried, Query

    account = _parse_account(address, "ADDRESS")

    async def body(driver: ClientDriver) -> None:
        events = await driver.perform(account, Query())
        queried = next((event for event in events if isinstance(event, AccountQueried)), None)
        if queried is None or queried.balance is None:
            answered = len(queried.responses) if queried is not None else 0
            total = len(driver.committee)
            raise CommandFailed(
                f"no quorum of authorities answered ({answered} of {total}); are they running?"
            )
        click.echo(queried.balance)

    _run_client(context, body)


@client.command("transfer")
@click.argument("amount", type=click.IntRange(1, 2**63 - 1))
@click.option("--from", "sender", required=True, help="Paying account (in the accounts file).")
@click.option("--to", "recipient", required=True, help="Receiving account address.")
@click.pass_obj
def transfer(context: _ClientContext, amount: int, sender: str, recipient: str) -> None:
    """Pay AMOUNT from one wallet to an address; recover an interrupted transfer first."""
    from synod.fastpay.client import Pay

    source = _parse_account(sender, "--from")
    target = _parse_account(recipient, "--to")

    async def body(driver: ClientDriver) -> None:
        core = driver.core(source)
        if core.pending is not None:
            number = core.pending.transfer.sequence_number
            click.echo(f"resuming the interrupted transfer #{number} first", err=True)
            resumed = await _finish_transfer(driver, source, _resume_command())
            await _receive_if_ours(driver, source, resumed)
        started = time.perf_counter()
        certificate = await _finish_transfer(driver, source, Pay(target, amount))
        elapsed_ms = (time.perf_counter() - started) * 1000
        click.echo(
            f"transfer #{certificate.transfer.sequence_number} of {amount} confirmed "
            f"in {elapsed_ms:.0f} ms; known balance {driver.core(source).balance}"
        )
        await _receive_if_ours(driver, source, certificate)

    _run_client(context, body)


def _resume_command() -> Any:
    from synod.fastpay.client import Resume

    return Resume()


async def _finish_transfer(driver: ClientDriver, account: bytes, command: Any) -> Any:
    """Run a Pay/Resume to confirmation; return the certificate or raise `CommandFailed`."""
    from synod.core import LocalError
    from synod.fastpay.client import TransferConfirmed, TransferFailed

    events = await driver.perform(account, command)
    for event in events:
        if isinstance(event, LocalError):
            raise CommandFailed(str(event))
        if isinstance(event, TransferFailed):
            raise CommandFailed(_failure_text(driver, event))
        if isinstance(event, TransferConfirmed):
            return event.certificate
    names = ", ".join(type(event).__name__ for event in events) or "no events"
    raise CommandFailed(f"the transfer did not complete ({names})")


def _failure_text(driver: ClientDriver, event: Any) -> str:
    text = f"transfer #{event.sequence_number} failed at the {event.stage} stage: {event.reason}"
    if event.error is not None and event.error.detail:
        text += f" ({event.error.detail})"
    if event.stage == "vote":
        text += "; the order stays pending and the next transfer from this account resumes it"
    return text


async def _receive_if_ours(driver: ClientDriver, sender: bytes, certificate: Any) -> None:
    """Count a payment in the recipient's wallet when the accounts file holds it."""
    from synod.fastpay.client import Receive, TransferReceived

    account = certificate.transfer.recipient
    if account not in driver.accounts.wallets or account == sender:
        return
    events = await driver.perform(account, Receive(certificate))
    if not any(isinstance(event, TransferReceived) for event in events):
        click.echo("warning: the recipient's wallet could not count the payment yet", err=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@client.command("benchmark")
@click.option("--max-in-flight", type=click.IntRange(1, 100_000), default=500, show_default=True)
@click.option("--amount", type=click.IntRange(1, 2**63 - 1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
@click.pass_obj
def benchmark(context: _ClientContext, max_in_flight: int, amount: int, as_json: bool) -> None:
    """Every wallet pays AMOUNT to the next one, at most MAX_IN_FLIGHT at once."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from synod.fastpay.client import Pay

    async def body(driver: ClientDriver) -> dict[str, Any]:
        accounts = list(driver.accounts.wallets)
        if not accounts:
            raise CommandFailed(f"{driver.accounts.path}: no accounts")
        limit = asyncio.Semaphore(max_in_flight)
        latencies_ms: list[float] = []
        failures: list[str] = []
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )

        async def one(index: int, task: Any) -> None:
            sender = accounts[index]
            recipient = accounts[(index + 1) % len(accounts)]
            async with limit:
                started = time.perf_counter()
                try:
                    if driver.core(sender).pending is not None:
                        await _finish_transfer(driver, sender, _resume_command())
                    await _finish_transfer(driver, sender, Pay(recipient, amount))
                    latencies_ms.append((time.perf_counter() - started) * 1000)
                except CommandFailed as error:
                    failures.append(error.message)
                progress.advance(task)

        started = time.perf_counter()
        with progress:
            task = progress.add_task("transfers", total=len(accounts))
            await asyncio.gather(*(one(index, task) for index in range(len(accounts))))
        seconds = time.perf_counter() - started
        return {
            "transfers": len(latencies_ms),
            "failed": len(failures),
            "seconds": round(seconds, 3),
            "transfers_per_s": round(len(latencies_ms) / seconds, 1) if seconds else 0.0,
            "latency_p50_ms": round(percentile(latencies_ms, 0.50), 1),
            "latency_p90_ms": round(percentile(latencies_ms, 0.90), 1),
            "latency_p99_ms": round(percentile(latencies_ms, 0.99), 1),
            "first_failure": failures[0] if failures else None,
        }

    summary = _run_client(context, body)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"{summary['transfers']} transfers confirmed in {summary['seconds']} s: "
            f"{summary['transfers_per_s']} transfers/s; latency p50 "
            f"{summary['latency_p50_ms']} ms, p90 {summary['latency_p90_ms']} ms, "
            f"p99 {summary['latency_p99_ms']} ms"
        )
        if summary["failed"]:
            click.echo(f"{summary['failed']} failed; first: {summary['first_failure']}")
    if summary["failed"]:
        sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------- local benchmark


def free_port_block(width: int, host: str = "127.0.0.1") -> int:
    """A base port with `width` consecutive ports free now (shard i on base + i)."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, 32_000 - width)  # below the ephemeral range
        sockets: list[socket.socket] = []
        try:
            for offset in range(width):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((host, base + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise CommandFailed(f"no block of {width} free ports found on {host}")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds a running process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def measure_crypto_cost_s(shards: int, repeats: int = 200) -> float:
    """CPU seconds of signature work one authority does per transfer, measured now.

    Per transfer an authority verifies the sender's order, signs its vote, verifies the
    quorum of votes in the certificate and, when the recipient lives in another shard
    (probability (shards - 1) / shards), signs and verifies a cross-shard update.
    """
    from synod.crypto import KeyPair, verify
    from synod.quorum.committee import quorum_threshold_of

    signer = KeyPair.from_seed(b"\x01" * 32)
    message = b"\x02" * 120
    signature = signer.sign(b"bench", message)
    votes = quorum_threshold_of(4)

    def fastest_s(operation: Callable[[], object]) -> float:
        # CPU time of this process, the fastest of several rounds: other load on the
        # machine delays the work but does not make it cost more.
        rounds = []
        for _ in range(7):
            started = time.process_time()
            for _ in range(repeats):
                operation()
            rounds.append((time.process_time() - started) / repeats)
        return min(rounds)

    sign_s = fastest_s(lambda: signer.sign(b"bench", message))
    verify_s = fastest_s(lambda: verify(signer.node_id, b"bench", message, signature))
    cross_shard = (shards - 1) / shards
    return verify_s + sign_s + votes * verify_s + cross_shard * (sign_s + verify_s)


@dataclass(frozen=True, slots=True)
class BenchSetup:
    directory: Path
    committee: CommitteeFile
    target: AuthorityEntry
    orders: list[Any]
    certificates: list[Any]


def prepare_bench(directory: Path, shards: int, transfers: int) -> BenchSetup:
    """Keys, files and the pre-signed workload: every account pays once."""
    from synod.crypto import KeyPair, node_id_text
    from synod.fastpay.messages import (
        AuthoritySignature,
        CertifiedTransferOrder,
        Transfer,
        make_transfer_order,
        make_vote,
    )

    authorities = [KeyPair.generate() for _ in range(4)]
    base = free_port_block(shards)
    entries = [AuthorityEntry(authorities[0].node_id, "127.0.0.1", base, shards)]
    entries += [
        AuthorityEntry(keys.node_id, "127.0.0.1", 1 + index * 1024, shards)
        for index, keys in enumerate(authorities[1:])
    ]
    (directory / "committee.json").write_text(
        "".join(json.dumps(entry.to_json()) + "\n" for entry in entries), encoding="utf-8"
    )
    server = {"authority": entries[0].to_json(), "secret_key": authorities[0].seed.hex()}
    (directory / "server.json").write_text(json.dumps(server), encoding="utf-8")
    accounts = [KeyPair.generate() for _ in range(transfers)]
    (directory / "initial_accounts.txt").write_text(
        "".join(f"{node_id_text(keys.node_id)}:100\n" for keys in accounts), encoding="utf-8"
    )
    orders, certificates = [], []
    for index, keys in enumerate(accounts):
        recipient = accounts[(index + 1) % len(accounts)].node_id
        order = make_transfer_order(keys, Transfer(keys.node_id, recipient, 1, 0))
        signatures = [
            AuthoritySignature(voter.node_id, make_vote(voter, order).signature)
            for voter in authorities[1:]
        ]
        orders.append(order)
        certificates.append(CertifiedTransferOrder(order=order, signatures=signatures))
    committee = CommitteeFile(directory / "committee.json", tuple(entries))
    return BenchSetup(directory, committee, entries[0], orders, certificates)


async def _drive_bench(setup: BenchSetup, max_in_flight: int) -> tuple[float, list[float]]:
    from synod.fastpay.messages import (
        REPLY_CODEC,
        REQUEST_CODEC,
        AccountInfoResponse,
        ConfirmationOrder,
        SignedTransferOrder,
    )
    from synod.runtime.rpc import RpcClient, RpcFailure

    route = shard_router(setup.committee)
    clients: dict[tuple[str, int], RpcClient] = {}
    limit = asyncio.Semaphore(max_in_flight)
    latencies_ms: list[float] = []

    def prepared(request: Any) -> tuple[tuple[str, int], bytes]:
        # Routed and encoded before the clock starts: the load generator shares the CPU.
        address = route(setup.target.name, request)
        assert address is not None
        return address, REQUEST_CODEC.encode(request)

    work = [
        (prepared(order), prepared(ConfirmationOrder(certificate)))
        for order, certificate in zip(setup.orders, setup.certificates, strict=True)
    ]

    async def call(request: tuple[tuple[str, int], bytes]) -> Any:
        address, body = request
        client = clients.get(address)
        if client is None:
            client = clients[address] = RpcClient(address)
        result = await client.call(body, timeout_s=30)
        if isinstance(result, RpcFailure):
            raise CommandFailed(f"the shard at {address} failed: {result.reason}")
        return REPLY_CODEC.decode(result.body)

    async def one(order: Any, confirmation: Any) -> None:
        async with limit:
            started = time.perf_counter()
            vote = await call(order)
            if not isinstance(vote, SignedTransferOrder):
                raise CommandFailed(f"the authority refused an order: {vote}")
            applied = await call(confirmation)
            if not isinstance(applied, AccountInfoResponse):
                raise CommandFailed(f"the authority refused a confirmation: {applied}")
            latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(order, confirmation) for order, confirmation in work))
    finally:
        for client in clients.values():
            await client.close()
    return time.perf_counter() - started, latencies_ms


def run_local_bench(shards: int, transfers: int, max_in_flight: int) -> dict[str, Any]:
    """Start one authority's `shards` shard processes, push `transfers` pre-signed
    orders and certificates through them, and compare with the crypto bound."""
    import signal
    import subprocess
    import tempfile

    # Measured before and after the run; the lower figure is the less disturbed one.
    cost_before_s = measure_crypto_cost_s(shards)
    with tempfile.TemporaryDirectory(prefix="synod-fastpay-bench-") as temporary:
        setup = prepare_bench(Path(temporary), shards, transfers)
        processes = []
        try:
            for shard in range(shards):
                command = [
                    sys.executable, "-m", "synod.cli.main", "fastpay", "server",
                    "--server", "server.json", "run", "--shard", str(shard),
                    "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
                ]  # fmt: skip
                log = Path(temporary) / f"shard-{shard}.log"
                with log.open("w") as stderr:
                    processes.append(
                        subprocess.Popen(  # noqa: S603 - our own interpreter and module
                            command, cwd=temporary, stdout=subprocess.PIPE, stderr=stderr, text=True
                        )
                    )
            for shard, process in enumerate(processes):
                assert process.stdout is not None
                if not process.stdout.readline():
                    log_text = (Path(temporary) / f"shard-{shard}.log").read_text()[-500:]
                    raise CommandFailed(f"shard {shard} did not start: {log_text}")
            cpu_before_s = sum(process_cpu_s(process.pid) for process in processes)
            seconds, latencies_ms = asyncio.run(_drive_bench(setup, max_in_flight))
            shard_cpu_s = sum(process_cpu_s(process.pid) for process in processes) - cpu_before_s
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    cost_s = min(cost_before_s, measure_crypto_cost_s(shards))
    cores = os.cpu_count() or 1
    bound_per_s = cores / cost_s
    throughput = len(latencies_ms) / seconds
    return {
        "benchmark": "fastpay-authority-shards",
        "authorities": 4,
        "shards": shards,
        "transfers": len(latencies_ms),
        "max_in_flight": max_in_flight,
        "seconds": round(seconds, 3),
        "transfers_per_s": round(throughput, 1),
        "latency_p50_ms": round(percentile(latencies_ms, 0.50), 2),
        "latency_p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "crypto_us_per_transfer": round(cost_s * 1e6, 1),
        "cores": cores,
        "crypto_bound_per_s": round(bound_per_s, 1),
        "ratio_to_crypto_bound": round(throughput / bound_per_s, 3),
        "shard_cpu_us_per_transfer": round(shard_cpu_s / max(1, len(latencies_ms)) * 1e6, 1),
        # The part of the shards' own CPU time that the signatures need: how close the
        # shards come to the bound per core, whatever else runs on the machine.
        "crypto_share_of_shard_cpu": round(cost_s / max(1e-9, shard_cpu_s / transfers), 3),
    }


@fastpay.command("bench")
@click.option("--shards", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--transfers", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--max-in-flight", type=click.IntRange(1, 100_000), default=200, show_default=True)
def bench(shards: int, transfers: int, max_in_flight: int) -> None:
    """Benchmark one authority's shards on this machine (one JSON line).

    The shards run as real processes with their SQLite files; orders and certificates
    (signed by the other three authorities) are prepared beforehand, so the figure is the
    authority's own work, compared with the cost of the signatures it must check and
    make (measured in the same run, divided over the cores).
    """
    click.echo(json.dumps(run_local_bench(shards, transfers, max_in_flight)))
