"""``mlserve keys create | revoke | list``: API keys for ``mlserve serve --api-keys FILE``."""

from __future__ import annotations

import click

__all__ = ["keys_group"]

file_option = click.option(
    "--file",
    "path",
    required=True,
    envvar="MLSERVE_API_KEYS",
    type=click.Path(dir_okay=False),
    help="The keys file (or $MLSERVE_API_KEYS).",
)


@click.group("keys")
def keys_group() -> None:
    """Create, revoke and list API keys (the file holds only their SHA-256 hashes)."""


@keys_group.command("create")
@file_option
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="predict, predict:<model>, read or admin (repeat for several).",
)
@click.option("--name", default=None, help="The key's id in the file and in logs (default: random).")
def create_command(path: str, scopes: tuple[str, ...], name: str | None) -> None:
    """Create a key; print it once (it is stored only as a hash)."""
    from mlserve.serving.security import KeyFileError, create_key

    try:
        token, entry = create_key(path, scopes, name=name)
    except (ValueError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"created key {entry.id} with scopes {', '.join(sorted(entry.scopes))} in {path}; "
        "it is shown once, store it now:",
        err=True,
    )
    click.echo(token)


@keys_group.command("revoke")
@file_option
@click.argument("key_id")
def revoke_command(path: str, key_id: str) -> None:
    """Remove the key KEY_ID (running servers stop accepting it within a second)."""
    from mlserve.serving.security import KeyFileError, revoke_key

    try:
        revoke_key(path, key_id)
    except KeyError:
        raise click.ClickException(f"no key {key_id!r} in {path}") from None
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked key {key_id}")


@keys_group.command("list")
@file_option
def list_command(path: str) -> None:
    """List key ids, scopes and creation times (never the keys)."""
    from mlserve.serving.security import KeyFileError, list_keys

    try:
        keys = list_keys(path)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    for key in keys:
        click.echo(f"{key.id:24} {','.join(sorted(key.scopes)):32} {key.created}")
