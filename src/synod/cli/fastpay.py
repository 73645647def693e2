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
  --to B`` (the same payment run again is paid once), ``... finish --from A``,
  ``... sync ADDRESS``, ``... restore-account`` (a key on stdin) and ``... benchmark``
  (from several processes) drive the wallets of the accounts file over TCP;
- ``synod fastpay bench`` measures one authority's shards on this machine against the
  cost of the signatures they must check and make.

This module only parses, prints and picks exit codes.  The file formats are
`synod.fastpay.config` and `synod.fastpay.wallet`; a shard process is
`synod.runtime.fastpay_node.FastPayShard`; the client side is
`synod.runtime.fastpay_wallet.WalletClient` (see docs/fastpay.md, *From Python*).
Errors in files or arguments, unknown accounts, unreachable authorities: a one-line
message on stderr and exit status 1 (2 for usage and configuration errors), never a
traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    check_host,
    log_level_option,
    notice_if_slow,
    print_json_line,
    run_process,
)
from synod.cli.supervise import add_supervision_commands

if TYPE_CHECKING:
    from rich.progress import Progress

    from synod.fastpay.config import CommitteeFile, ServerFile
    from synod.runtime.fastpay_wallet import BenchmarkSummary, WalletClient

EXIT_FAILED = 1
EXIT_CONFIG = 2
# synod.runtime.fastpay_wallet.DEFAULT_TIMEOUT_MS, spelled here: importing it loads asyncio.
DEFAULT_TIMEOUT_MS = 10_000
MAX_ACCOUNTS_PER_CREATE = 100_000
MAX_KEY_LINE = 1024
"""Characters `restore-account` reads from stdin at most: a key is 64, with blanks."""


class ConfigError(click.ClickException):
    """A file does not hold what it should: the message names the file, line and key."""

    exit_code = EXIT_CONFIG


class CommandFailed(click.ClickException):
    """The command could not do what was asked (authorities down, refusals...)."""

    exit_code = EXIT_FAILED


@contextmanager
def _exit_codes(*failures: type[Exception]) -> Iterator[None]:
    """The library's typed errors as one-line messages and exit codes: file errors exit
    2; wallet errors and `failures` (the command's own, such as `ShardError`) exit 1."""
    from synod.fastpay.config import FastPayFileError
    from synod.fastpay.wallet import WalletError

    failed: tuple[type[Exception], ...] = (WalletError, *failures)
    try:
        yield
    except FastPayFileError as error:
        raise ConfigError(str(error)) from None
    except failed as error:
        raise CommandFailed(str(error)) from None


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
@click.option(
    "--network-id",
    default="",
    help="The network's id, in every signature domain (the same for every authority).",
)
@click.pass_obj
def generate(  # noqa: PLR0917 - one parameter per click option
    server_path: Path, host: str, port: int, shards: int, weight: int, network_id: str
) -> None:
    """Write a new authority key file; print its committee.json line (append with >>)."""
    from synod.crypto import KeyPair
    from synod.fastpay.config import AuthorityEntry, network_id_problem
    from synod.runtime.fastpay_node import create_server_file

    if port + shards - 1 > 65535:
        raise click.BadParameter("port + shards - 1 must stay within 65535", param_hint="--port")
    check_host(host)  # before the key file is written: the loader refuses an empty host
    problem = network_id_problem(network_id)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--network-id")
    keys = KeyPair.generate()
    entry = AuthorityEntry(keys.node_id, host, port, shards, weight, network_id)
    try:
        create_server_file(server_path, keys, entry)
    except FileExistsError:
        raise CommandFailed(f"{server_path}: already exists; refusing to overwrite") from None
    except OSError as error:
        raise CommandFailed(f"{server_path}: cannot create: {error}") from None
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
    from synod.fastpay.config import CommitteeFile, ServerFile, load_initial_accounts

    with _exit_codes():
        server_file = ServerFile.load(server_path)
        committee_file = CommitteeFile.load(committee)
        entry = server_file.entry_in(committee_file)
        if shard >= entry.shards:
            raise click.BadParameter(f"this authority has shards 0..{entry.shards - 1}")
        genesis = load_initial_accounts(initial_accounts)
    if storage is None:
        storage = server_path.with_name(f"{server_path.stem}.shard-{shard}.sqlite")
    elif storage.exists() and not storage.is_file():
        # SQLite would leave its journal and the lock file beside a device (in /dev)
        raise click.BadParameter(f"{storage}: not a regular file", param_hint="--storage")
    host, port = entry.address(shard)
    run_process(
        _serve_shard(server_file, committee_file, shard, genesis, storage),
        log_level,
        listen_failure=f"cannot listen on {host}:{port}",
    )


async def _serve_shard(
    server_file: ServerFile,
    committee_file: CommitteeFile,
    shard: int,
    genesis: dict[bytes, int],
    storage_path: Path,
) -> int:
    """Serve the shard until SIGINT/SIGTERM: the exit status."""
    import logging

    from synod.crypto import node_id_text
    from synod.runtime.fastpay_node import FastPayShard, ShardError
    from synod.runtime.host import HostFailed

    node = FastPayShard(server_file.keys, committee_file, shard, genesis, storage_path)
    with _exit_codes(ShardError):
        await node.start()
    ready = {
        "event": "ready",
        "authority": node_id_text(server_file.keys.node_id),
        "shard": shard,
        "address": f"{node.entry.host}:{node.address[1]}",
        "accounts": len(node.core.accounts),
        "storage": str(storage_path),
    }
    try:
        await node.serve(on_ready=lambda: print_json_line(ready, ensure_ascii=True))
    except HostFailed as error:
        logging.getLogger("synod.cli.fastpay").error("shard failed", extra={"reason": str(error)})
        return EXIT_FAILED
    return 0


# ---------------------------------------------------------------- client commands


@dataclass(frozen=True, slots=True)
class _ClientContext:
    committee: Path
    accounts: Path
    timeout_ms: int


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
@click.option(
    "--force",
    is_flag=True,
    help="Start a genesis even for a committee where no authority may fail.",
)
@click.pass_obj
def create_accounts(
    context: _ClientContext, count: int, initial_funding: int, force: bool
) -> None:
    """Add COUNT new wallets; print ADDRESS:BALANCE lines (append to the genesis file)."""
    from synod.fastpay.config import CommitteeFile, initial_account_line
    from synod.fastpay.messages import MAX_SUPPLY
    from synod.runtime.fastpay_wallet import AccountsFile, create_wallets

    if count * initial_funding > MAX_SUPPLY:
        # every shard would refuse the genesis these lines make: say so before writing
        raise click.BadParameter(
            f"{count} accounts of {initial_funding} pass the total supply the shards "
            f"accept ({MAX_SUPPLY}, 2^63-1)",
            param_hint="--initial-funding",
        )
    with _exit_codes():
        committee = CommitteeFile.load(context.committee)  # a typo caught before writing
    if not force:
        _refuse_fragile_committee(committee, context.committee)
    with _exit_codes():
        accounts = AccountsFile.open(context.accounts, missing_ok=True)
        try:
            created = create_wallets(accounts, count, initial_funding)
            accounts.save()
        finally:
            accounts.unlock()
    for account in created:
        click.echo(initial_account_line(account, initial_funding))


def _refuse_fragile_committee(committee: CommitteeFile, path: Path) -> None:
    """A usage error when not even the lightest authority may fail: FastPay needs a total
    weight N >= 3f + 1 with f at least one authority's weight (4 equal authorities for
    f = 1); below that one crashed or lying authority stops or misleads every payment."""
    weights = committee.committee()
    lightest = min(entry.weight for entry in committee.authorities)
    if lightest > weights.max_faulty_weight:
        raise click.UsageError(
            f"{path}: {len(committee.authorities)} authorities of total weight "
            f"{weights.total_weight} tolerate faulty weight {weights.max_faulty_weight}, less "
            f"than any one authority's (FastPay needs N >= 3f + 1: 4 authorities of equal "
            "weight for one fault); --force creates the accounts anyway"
        )


def _run_client(
    context: _ClientContext, body: Callable[[WalletClient], Any], *, notice: bool = True
) -> Any:
    """Run `body` with a wallet over the context's files; library errors as exit codes;
    with `notice`, a line on stderr says what it waits for after a second."""
    import asyncio

    from synod.runtime.fastpay_wallet import open_wallet

    async def main() -> Any:
        async with open_wallet(
            context.committee, context.accounts, timeout_ms=context.timeout_ms
        ) as wallet:
            return await body(wallet)

    waiting = (
        f"waiting for the authorities of {context.committee} to answer (each up to "
        f"{context.timeout_ms / 1000:g} s, --timeout-ms); are they running? "
        f"`synod fastpay status {context.committee.parent}` asks them"
    )
    # A benchmark is long by design and shows its own progress.
    try:
        with _exit_codes(), notice_if_slow(waiting) if notice else nullcontext():
            return asyncio.run(main())
    except CommandFailed as error:
        if "not enough authorities accepted" not in error.message:
            raise
        # the wallet cannot tell "refused" from "down": say how to find out
        raise CommandFailed(
            f"{error.message}\nare the authorities running? `synod fastpay status "
            f"{context.committee.parent}` asks each of them"
        ) from None


def _account(text: str, where: str) -> bytes:
    from synod.fastpay.config import parse_account

    with _exit_codes():
        return parse_account(text, where)


@client.command("query-balance")
@click.argument("address")
@click.pass_obj
def query_balance(context: _ClientContext, address: str) -> None:
    """Print the balance of ADDRESS that a quorum of authorities vouches for."""
    account = _account(address, "ADDRESS")

    async def body(wallet: WalletClient) -> None:
        click.echo(await wallet.query_balance(account))

    _run_client(context, body)


@client.command("transfer")
@click.argument("amount", type=click.IntRange(1, 2**63 - 1))
@click.option("--from", "sender", required=True, help="Paying account (in the accounts file).")
@click.option("--to", "recipient", required=True, help="Receiving account address.")
@click.pass_obj
def transfer(context: _ClientContext, amount: int, sender: str, recipient: str) -> None:
    """Pay AMOUNT from one wallet to an address, once: running it again after a failure
    finishes the same payment; another interrupted transfer is finished first."""
    source = _account(sender, "--from")
    target = _account(recipient, "--to")

    async def body(wallet: WalletClient) -> None:
        pending = wallet.pending_order(source)
        unconfirmed = wallet.core(source).unconfirmed
        interrupted = pending.transfer if pending is not None else None
        if interrupted is None and unconfirmed is not None:
            interrupted = unconfirmed.transfer
        if interrupted is not None:
            number = interrupted.sequence_number
            if (interrupted.recipient, interrupted.amount) == (target, amount):
                note = f"finishing the interrupted transfer #{number}: this same payment, paid once"
            else:
                note = f"resuming the interrupted transfer #{number} first"
            click.echo(note, err=True)
        done = await wallet.transfer(source, target, amount)
        if done.recovered:
            click.echo("the wallet was behind the authorities; it was brought up to date", err=True)
        click.echo(
            f"transfer #{done.certificate.transfer.sequence_number} of {amount} confirmed "
            f"in {done.elapsed_ms:.0f} ms; known balance {done.balance}"
        )
        for _ in done.uncounted:
            click.echo("warning: the recipient's wallet could not count the payment yet", err=True)

    _run_client(context, body)


@client.command("finish")
@click.option("--from", "sender", required=True, help="The account whose order is pending.")
@click.pass_obj
def finish(context: _ClientContext, sender: str) -> None:
    """Finish the account's interrupted transfer, without any new payment."""
    source = _account(sender, "--from")

    async def body(wallet: WalletClient) -> None:
        certificate = await wallet.finish(source)
        if certificate is None:
            click.echo("nothing is pending")
            return
        transfer = certificate.transfer
        click.echo(
            f"transfer #{transfer.sequence_number} of {transfer.amount} confirmed; "
            f"known balance {wallet.known_balance(source)}"
        )

    _run_client(context, body)


@client.command("sync")
@click.argument("address")
@click.pass_obj
def sync(context: _ClientContext, address: str) -> None:
    """Bring ADDRESS's wallet up to date from the authorities (after a restore from its
    key, or payments made from other wallets): transfers, pending order, payments
    received and the balance a quorum vouches for."""
    _synchronize(context, _account(address, "ADDRESS"))


@client.command("restore-account")
@click.pass_obj
def restore_account(context: _ClientContext) -> None:
    """Add a wallet from its secret key alone (64 hexadecimal digits read from stdin,
    never from the command line) and rebuild its state from the authorities."""
    import sys

    from synod.crypto import KeyPair, node_id_text
    from synod.fastpay.config import CommitteeFile, hex_bytes
    from synod.runtime.fastpay_wallet import AccountsFile

    # bounded: stdin may be a stream without a newline (a pipe from the wrong command)
    line = sys.stdin.readline(MAX_KEY_LINE)
    seed = hex_bytes(line.strip(), 32) if len(line) < MAX_KEY_LINE else None
    if seed is None:
        raise ConfigError("stdin: expected the secret key, 64 hexadecimal digits")
    keys = KeyPair.from_seed(seed)
    with _exit_codes():
        CommitteeFile.load(context.committee)
        accounts = AccountsFile.open(context.accounts, missing_ok=True)
        try:
            if bytes(keys.node_id) not in accounts.wallets:
                accounts.add(keys)
                accounts.save()
        finally:
            accounts.unlock()
    click.echo(node_id_text(keys.node_id))
    _synchronize(context, keys.node_id)


def _synchronize(context: _ClientContext, account: bytes) -> None:
    """Recover `account`'s wallet from the authorities and print what it learnt."""

    async def body(wallet: WalletClient) -> None:
        recovered = await wallet.recover(account)
        pending = recovered.adopted_pending or wallet.pending_order(account)
        pending_text = (
            "none" if pending is None else f"#{pending.transfer.sequence_number} (run finish)"
        )
        click.echo(
            f"next transfer #{recovered.next_sequence_number}; "
            f"{len(recovered.sent)} transfers and {len(recovered.received)} payments "
            f"received fetched; pending {pending_text}; known balance {recovered.balance}"
        )

    _run_client(context, body)


def _default_processes() -> int:
    """Two load processes, or one per four cores (at most 8): the shards need the rest.

    Measured on two cores with 2,000 wallets: one process reached 0.42 of what
    benchmarks/fastpay_bench.py measured beside it, two processes 1.09."""
    import os

    return min(8, max(2, (os.cpu_count() or 1) // 4))


def _progress() -> Progress:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _benchmark_in_processes(
    context: _ClientContext, processes: int, max_in_flight: int, amount: int
) -> BenchmarkSummary:
    import asyncio

    from synod.fastpay.config import CommitteeFile
    from synod.runtime.fastpay_wallet import AccountsFile, benchmark_in_processes

    with _exit_codes():
        CommitteeFile.load(context.committee)
        accounts = AccountsFile.open(context.accounts)
        try:
            with _progress() as progress:
                task = progress.add_task("transfers", total=len(accounts.wallets))
                return asyncio.run(
                    benchmark_in_processes(
                        context.committee,
                        accounts,
                        processes=processes,
                        max_in_flight=max_in_flight,
                        amount=amount,
                        timeout_ms=context.timeout_ms,
                        on_progress=lambda done: progress.advance(task, done),
                    )
                )
        finally:
            accounts.unlock()


@client.command("benchmark")
@click.option("--max-in-flight", type=click.IntRange(1, 100_000), default=500, show_default=True)
@click.option("--amount", type=click.IntRange(1, 2**63 - 1), default=1, show_default=True)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Load processes, each over a part of the wallets [default: 2, or one per 4 cores].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
@click.option("--raw-json", is_flag=True, hidden=True, help="JSON with every latency.")
@click.pass_obj
def benchmark(  # noqa: PLR0917 - one parameter per click option
    context: _ClientContext,
    max_in_flight: int,
    amount: int,
    processes: int | None,
    as_json: bool,
    raw_json: bool,
) -> None:
    """Every wallet pays AMOUNT to the next one, at most MAX_IN_FLIGHT at once.

    With several processes each pays within its part of the wallets, so that the load,
    not one client process, reaches the committee's throughput."""
    count = processes if processes is not None else _default_processes()

    async def body(wallet: WalletClient) -> Any:
        with _progress() as progress:
            task = progress.add_task("transfers", total=len(wallet.accounts.wallets))
            return await wallet.benchmark(
                max_in_flight=max_in_flight,
                amount=amount,
                on_progress=lambda: progress.advance(task),
            )

    if count > 1:
        summary = _benchmark_in_processes(context, count, max_in_flight, amount)
    else:
        summary = _run_client(context, body, notice=False)
    if raw_json:
        click.echo(json.dumps(summary.to_json(raw=True)))
    elif as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        click.echo(
            f"{summary.transfers} transfers confirmed in {summary.seconds} s "
            f"({summary.processes} process{'es' if summary.processes > 1 else ''}): "
            f"{summary.transfers_per_s} transfers/s; latency p50 "
            f"{summary.latency_p50_ms} ms, p90 {summary.latency_p90_ms} ms, "
            f"p99 {summary.latency_p99_ms} ms"
        )
        if summary.failed:
            click.echo(f"{summary.failed} failed; first: {summary.first_failure}")
    if summary.failed:
        raise SystemExit(EXIT_FAILED)


# ---------------------------------------------------------------- local benchmark


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
    from synod.runtime.fastpay_node import BenchFailed, run_local_bench

    with _exit_codes(BenchFailed, OSError):
        line = run_local_bench(shards, transfers, max_in_flight)
    click.echo(json.dumps(line))


def _plan(directory: Path) -> Any:
    from synod.runtime.supervisor import plan_fastpay

    return plan_fastpay(directory)


def _request_ports(directory: Path) -> dict[str, tuple[str, int]]:
    from synod.runtime.supervisor import request_ports_fastpay

    return request_ports_fastpay(directory)


add_supervision_commands(fastpay, _plan, "fastpay", request_ports=_request_ports)
