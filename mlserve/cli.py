"""The mlserve command line (click, like Flask's own CLI)."""
from __future__ import annotations

import json

import click


@click.group()
@click.version_option(package_name="mlserve")
def main():
    """mlserve: fast, safe model inference."""


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-verify", is_flag=True, help="Skip the data checksum pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON only.")
def info(path, no_verify, as_json):
    """Print the metadata and arrays of an .mls model file."""
    from . import _core
    from ._errors import ModelFormatError

    try:
        model = _core.load(path, verify=not no_verify)
    except (ModelFormatError, OSError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    metadata = json.loads(model.metadata)
    if as_json:
        click.echo(json.dumps(metadata, indent=2))
        return
    training = metadata.pop("training", None)
    steps = metadata.pop("steps", None)  # pipelines: the steps and the input schema
    schema = metadata.pop("input_schema", None)
    final = metadata.pop("final", None)
    click.echo(f"{path}")
    for key, value in metadata.items():
        click.echo(f"  {key:16} {json.dumps(value) if not isinstance(value, str) else value}")
    if training:
        click.echo(f"  {'training':16} {training.get('n_samples')} samples")
        for line in _reference_lines(training, metadata.get("feature_names")):
            click.echo(f"    {line}")
    if steps:
        click.echo("  steps:")
        for step in steps:
            click.echo(f"    {step['name']} ({step['class']})")
            for t in step.get("transformers") or []:
                click.echo(f"      {t['name']}: {' -> '.join(t['steps'])} on "
                           f"{', '.join(t['columns'])}")
        if final:
            click.echo(f"  {'final':16} {final.get('estimator')} ({final.get('kind')})")
    if schema:
        click.echo("  input schema:")
        for col in schema:
            cats = col.get("categories")
            known = ""
            if cats is not None:
                shown = ", ".join(cats[:8]) + (f", ... ({len(cats)} in all)"
                                               if len(cats) > 8 else "")
                known = f" categories: {shown}"
            click.echo(f"    {col['name']:14} {col['kind']:8}{known}")
    click.echo("  arrays:")
    for name, array in model.arrays().items():
        click.echo(f"    {name:14} {array.dtype!s:8} {array.shape}")


def _reference_lines(training, feature_names):
    """One line per feature (and the prediction) of the drift reference, if the file has one."""
    entries = training.get("features")
    if not isinstance(entries, list):
        yield "no drift reference (bins): drift monitoring reports 'no reference'"
        return
    names = feature_names or [f"x{j}" for j in range(len(entries))]
    yield f"drift reference: bins of {training.get('n_binned')} rows"
    for name, entry in zip([*names, "prediction"], [*entries, training.get("prediction")]):
        if isinstance(entry, dict):
            yield f"  {name:14} {_describe_column(entry)}"


def _describe_column(entry) -> str:
    if entry.get("type") == "categorical":
        pairs = list(zip(entry.get("values", []), entry.get("counts", [])))
        shown = ", ".join(f"{v}: {c}" for v, c in pairs[:8]) + (", ..." if len(pairs) > 8 else "")
        return f"categorical  {len(pairs)} values ({shown})"
    edges = entry.get("edges") or []
    psi_edges = entry.get("psi_edges") or []
    median = psi_edges[len(psi_edges) // 2] if psi_edges else None
    span = f"p1 {edges[0]:.4g}, median {median:.4g}, p99 {edges[-1]:.4g}" if edges and median is not None else ""
    return f"numeric      {len(edges) + 1} bins ({span})"


@main.command("show-config")
def show_config_command():
    """Print version, BLAS library and threads."""
    from . import show_config

    show_config()


# serve, publish, models, alias, rollback, delete, demo (mlserve/_serve_cli.py)
from ._serve_cli import register_serving_commands  # noqa: E402

register_serving_commands(main)

from ._keys_cli import keys_group  # noqa: E402

main.add_command(keys_group)


if __name__ == "__main__":
    main()
