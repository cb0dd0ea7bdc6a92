"""Store commands shared by ``mlserve ...`` and the ``flask mlserve ...`` group of a host app."""

from __future__ import annotations

from typing import Any

import click
from flask import Blueprint

from mlserve.serving.registry import serving_state
from mlserve.store import AliasTarget, ModelStore, StoreError

__all__ = [
    "force_option",
    "format_models",
    "parse_alias_targets",
    "register_flask_commands",
    "run_store_command",
]

force_option = click.option(
    "--force",
    is_flag=True,
    help="Move the alias even if the version differs from what it serves "
    "(task, features, classes, dtype, outputs).",
)


def parse_alias_targets(text: str) -> int | dict[int, float]:
    """``"3"`` -> 3; ``"3=90,4=10"`` -> ``{3: 90.0, 4: 10.0}`` (a canary split)."""
    text = text.strip()
    if "=" not in text and "," not in text:
        try:
            return int(text)
        except ValueError:
            raise click.BadParameter(f"expected a version number, got {text!r}") from None
    targets: dict[int, float] = {}
    for part in text.split(","):
        version, sep, weight = part.partition("=")
        try:
            number, share = int(version), float(weight) if sep else 1.0
        except ValueError:
            raise click.BadParameter(
                f"expected VERSION or VERSION=WEIGHT,VERSION=WEIGHT, got {text!r}"
            ) from None
        if number in targets:
            raise click.BadParameter(f"version {number} appears twice in {text!r}")
        targets[number] = share
    return targets


def format_targets(targets: list[AliasTarget]) -> str:
    if len(targets) == 1:
        return f"v{targets[0].version}"
    total = sum(t.weight for t in targets)
    return ", ".join(f"v{t.version} ({100 * t.weight / total:g}%)" for t in targets)


def format_models(store: ModelStore, default_alias: str | None = "production") -> str:
    """A plain-text table of the store's models, versions and aliases.

    Input and task are those of the version ``default_alias`` serves (else the newest).
    """
    lines = []
    for name in store.names():
        manifest = store.manifest(name)
        described = store.describe(name, manifest, default_alias=default_alias)
        aliases = "; ".join(
            f"{alias} -> {format_targets(list(targets))}"
            for alias, targets in sorted(manifest.aliases.items())
        )
        versions = ", ".join(str(v) for v in sorted(manifest.versions)) or "-"
        lines.append(
            f"{name}  versions: {versions}  aliases: {aliases or '-'}  "
            f"input: {described['input_shape']}  task: {described['task']}"
        )
    return "\n".join(lines) if lines else f"no models in {store.root}"


def run_store_command(action: Any) -> Any:
    """Run a store operation, turning its errors into a click error (exit status 1)."""
    try:
        return action()
    except (StoreError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def shadow_action(store: Any, name: str, alias: str, version: int | None, off: bool) -> str:
    """``mlserve shadow`` / ``flask mlserve shadow``: start or end a shadow; the line to print."""
    if off:
        if version is not None:
            raise click.UsageError("give either VERSION or --off, not both")
        run_store_command(lambda: store.remove_shadow(name, alias))
        return f"{name}: {alias} has no shadow"
    if version is None:
        raise click.UsageError("missing VERSION (or --off to end the shadow)")
    run_store_command(lambda: store.set_shadow(name, alias, version))
    return f"{name}: {alias} is shadowed by version {version}"


def register_flask_commands(bp: Blueprint) -> None:
    """Add ``flask <blueprint name> models|publish|alias|rollback|reload`` to a host app's CLI."""

    def state() -> Any:
        return serving_state(name=bp.name)

    @bp.cli.command("models")
    def models_command() -> None:
        """List the served store's models, versions and aliases."""
        serving = state()
        click.echo(format_models(serving.store, serving.config.default_alias))

    @bp.cli.command("publish")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @click.option("--name", "-n", required=True, help="Model name.")
    @click.option("--alias", "-a", default=None, help="Point this alias at the new version.")
    @force_option
    def publish_command(file: str, name: str, alias: str | None, force: bool) -> None:
        """Publish an .mls FILE as the next version of a model."""
        store = state().store
        version = run_store_command(lambda: store.publish(name, file, alias=alias, force=force))
        click.echo(f"published {name} version {version}" + (f" as {alias}" if alias else ""))

    @bp.cli.command("alias")
    @click.argument("name")
    @click.argument("alias")
    @click.argument("versions")
    @force_option
    def alias_command(name: str, alias: str, versions: str, force: bool) -> None:
        """Point ALIAS of model NAME at VERSIONS ("3", or "3=90,4=10" for a canary split)."""
        store = state().store
        targets = run_store_command(
            lambda: store.set_alias(name, alias, parse_alias_targets(versions), force=force)
        )
        click.echo(f"{name}: {alias} -> {format_targets(targets)}")

    @bp.cli.command("shadow")
    @click.argument("name")
    @click.argument("alias")
    @click.argument("version", required=False, type=click.IntRange(1))
    @click.option("--off", is_flag=True, help="End the shadow of ALIAS.")
    def shadow_command(name: str, alias: str, version: int | None, off: bool) -> None:
        """Mirror the requests ALIAS of model NAME answers to VERSION (or --off to end it)."""
        click.echo(shadow_action(state().store, name, alias, version, off))

    @bp.cli.command("rollback")
    @click.argument("name")
    @click.argument("alias")
    def rollback_command(name: str, alias: str) -> None:
        """Move ALIAS of model NAME back to where it pointed before."""
        store = state().store
        targets = run_store_command(lambda: store.rollback(name, alias))
        click.echo(f"{name}: {alias} -> {format_targets(targets)}")
