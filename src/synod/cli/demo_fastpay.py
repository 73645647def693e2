"""`synod demo --protocol fastpay`: a FastPay committee of real processes pays, loses a
shard, gets it back, and every balance adds up.

Four authorities of two shards each are made with the quickstart's own commands (`synod
fastpay server generate`, `client create-accounts`) and started with `synod fastpay up`'s
supervisor.  Eight accounts of 100 pay each other in a ring, three rounds (account i pays
3 x round + i to the next, so balances drift apart); after the
first round one shard process is SIGKILLed (a quorum of the other authorities still
serves every account), after the second it is restarted from its SQLite file.  The
verdict: every payment confirmed once, each balance as the payments say (asked of a
quorum), the supply still 800, the restarted shard serving again, a clean shutdown.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import click

AUTHORITIES = 4
SHARDS = 2
ACCOUNTS = 8
FUNDING = 100
ROUNDS = 3
VICTIM = "server2.shard-1"


def run_fastpay_demo(workdir: Path) -> bool:
    """Run the demonstration in `workdir`; True when every check holds."""
    from synod.runtime.supervisor import Supervisor, plan_fastpay

    accounts = _set_up(workdir)
    supervisor = Supervisor(workdir)
    supervisor.up(plan_fastpay(workdir))
    click.echo(f"{AUTHORITIES} authorities x {SHARDS} shards up; {ACCOUNTS} accounts of {FUNDING}")
    expected = dict.fromkeys(accounts, FUNDING)
    confirmed = 0
    restarted_ok = False
    try:
        for round_number in range(1, ROUNDS + 1):
            amounts = [3 * round_number + index for index in range(len(accounts))]
            confirmed += asyncio.run(_pay_ring(workdir, accounts, amounts))
            for index, (account, amount) in enumerate(zip(accounts, amounts, strict=True)):
                expected[account] -= amount
                expected[accounts[(index + 1) % len(accounts)]] += amount
            click.echo(f"round {round_number}: account i paid {3 * round_number} + i to the next")
            if round_number == 1:
                supervisor.kill(VICTIM)
                click.echo(f"  {VICTIM} SIGKILLed: the other three authorities serve on")
            elif round_number == 2:
                supervisor.restart(VICTIM)
                restarted_ok = True
                click.echo(f"  {VICTIM} restarted from its SQLite file")
        balances = asyncio.run(_balances(workdir, accounts))
    finally:
        outcome = supervisor.down()
    clean = all(result == "stopped" for result in outcome.values())
    return _verdict(balances, expected, confirmed, restarted_ok, clean)


def _synod(workdir: Path, *arguments: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "synod.cli.main", "fastpay", *arguments],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise click.ClickException(f"synod fastpay {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout


def _set_up(workdir: Path) -> list[str]:
    from synod.runtime.fastpay_node import free_port_block

    committee = ""
    for index in range(1, AUTHORITIES + 1):
        generate = ["server", "--server", f"server{index}.json", "generate", "--host", "127.0.0.1"]
        port = str(free_port_block(SHARDS))
        committee += _synod(workdir, *generate, "--port", port, "--shards", str(SHARDS))
    (workdir / "committee.json").write_text(committee, encoding="utf-8")
    client = ["client", "--committee", "committee.json", "--accounts", "accounts.json"]
    genesis = _synod(workdir, *client, "create-accounts", str(ACCOUNTS), "--initial-funding",
                     str(FUNDING))  # fmt: skip
    (workdir / "initial_accounts.txt").write_text(genesis, encoding="utf-8")
    return [line.split(":")[0] for line in genesis.splitlines()]


async def _pay_ring(workdir: Path, accounts: list[str], amounts: list[int]) -> int:
    from synod.crypto import parse_node_id
    from synod.runtime.fastpay_wallet import open_wallet

    confirmed = 0
    async with open_wallet(workdir / "committee.json", workdir / "accounts.json") as wallet:
        for index, sender in enumerate(accounts):
            recipient = accounts[(index + 1) % len(accounts)]
            await wallet.transfer(parse_node_id(sender), parse_node_id(recipient), amounts[index])
            confirmed += 1
    return confirmed


async def _balances(workdir: Path, accounts: list[str]) -> dict[str, int]:
    from synod.crypto import parse_node_id
    from synod.runtime.fastpay_wallet import open_wallet

    async with open_wallet(workdir / "committee.json", workdir / "accounts.json") as wallet:
        return {
            account: await wallet.query_balance(parse_node_id(account)) for account in accounts
        }


def _verdict(
    balances: dict[str, int],
    expected: dict[str, int],
    confirmed: int,
    restarted: bool,
    clean: bool,
) -> bool:
    checks = {
        f"every payment confirmed once ({confirmed} of {ACCOUNTS * ROUNDS})": confirmed
        == ACCOUNTS * ROUNDS,
        "each balance as the payments say": balances == expected,
        f"supply still {ACCOUNTS * FUNDING}": sum(balances.values()) == ACCOUNTS * FUNDING,
        "the killed shard restarted and served": restarted,
        "clean shutdown": clean,
    }
    click.echo(json.dumps({"balances": list(balances.values())}))
    from synod.cli.demo import print_verdict

    print_verdict(checks)
    return all(checks.values())
