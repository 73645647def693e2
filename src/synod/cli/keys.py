"""`synod keys`: create and show node keys."""

from __future__ import annotations

from pathlib import Path

import click

from synod.crypto import KeyFileError, KeyPair, node_id_text, read_key_file, write_key_file


@click.group()
def keys() -> None:
    """Create and show Ed25519 node keys."""


@keys.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def generate(path: Path) -> None:
    """Write a new key file at PATH (mode 0600) and print its node id."""
    pair = KeyPair.generate()
    try:
        write_key_file(path, pair)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(node_id_text(pair.node_id))


@keys.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--stellar",
    is_flag=True,
    help="Print the Stellar public key (G...) instead: what Stellar quorum sets name.",
)
def show(path: Path, stellar: bool) -> None:
    """Print the node id of the key file at PATH."""
    try:
        pair = read_key_file(path)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(_stellar_id(pair) if stellar else node_id_text(pair.node_id))


def _stellar_id(pair: KeyPair) -> str:
    try:
        from synod.scp.stellar import node_id_to_strkey
    except ImportError:
        raise click.ClickException(
            "Stellar keys come from stellar-sdk: pip install 'synod[stellar]'"
        ) from None
    return node_id_to_strkey(pair.node_id)
