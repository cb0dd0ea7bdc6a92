"""How models, estimators and stores show themselves: ``repr`` (scikit-learn
style, the non-default parameters only) and ``_repr_html_`` (a compact table
in Jupyter). Everything shown is escaped; nothing here is on a hot path.
"""
from __future__ import annotations

import html
import inspect
import json

MAX_FEATURES_SHOWN = 20  # rows of the feature table before "... and N more"
MAX_CLASSES_SHOWN = 20
MAX_MODELS_SHOWN = 50  # a store's listing

_STYLE = (
    "<style>.mlserve-repr table{border-collapse:collapse;font-size:12px}"
    ".mlserve-repr th,.mlserve-repr td{text-align:left;padding:1px 8px;"
    "border-bottom:1px solid #ddd;vertical-align:top}"
    ".mlserve-repr caption{text-align:left;font-weight:bold}</style>"
)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _short(values, limit: int) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} in all)"
    return shown


def changed_params(obj) -> dict:
    """The parameters of ``obj`` whose value differs from the ``__init__`` default."""
    defaults = {
        p.name: p.default for p in inspect.signature(type(obj).__init__).parameters.values()
    }
    out = {}
    for name, value in obj.get_params().items():
        default = defaults.get(name, inspect.Parameter.empty)
        try:
            same = default is value or bool(default == value)
        except (TypeError, ValueError):  # an array: never equal to a default
            same = False
        if not same:
            out[name] = value
    return out


def params_repr(obj) -> str:
    """``Name(a=1, b='x')`` with the non-default parameters, as scikit-learn prints."""
    inner = ", ".join(f"{k}={v!r}" for k, v in changed_params(obj).items())
    return f"{type(obj).__name__}({inner})"


def _table(caption: str, rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table><caption>{_e(caption)}</caption>{body}</table>"


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else _e(x)


def params_html(obj) -> str:
    """Parameters only (an unfitted estimator, or a fitter such as ALS)."""
    changed = changed_params(obj)
    rows = [(k, _e(repr(v))) for k, v in changed.items()] or [("parameters", "defaults")]
    status = "not fitted" if hasattr(obj, "__sklearn_is_fitted__") else ""
    caption = f"{type(obj).__name__}" + (f" ({status})" if status else "")
    return f'<div class="mlserve-repr">{_STYLE}{_table(caption, rows)}</div>'


def model_size_bytes(model) -> int:
    """Bytes of the model's arrays (what a worker maps, shares and serves from)."""
    total = 0
    for array in model.arrays().values():
        total += int(getattr(array, "nbytes", 0))
    return total


def _feature_table(meta: dict) -> str:
    n = int(meta.get("n_features") or 0)
    names = meta.get("feature_names") or [f"x{i}" for i in range(n)]
    training = meta.get("training") or {}
    stats = [k for k in ("feature_mean", "feature_std", "feature_min", "feature_max")
             if isinstance(training.get(k), list) and len(training[k]) == n]  # fmt: skip
    head = "<tr><th>feature</th>" + "".join(f"<th>{_e(s[8:])}</th>" for s in stats) + "</tr>"
    rows = []
    for i, name in enumerate(names[:MAX_FEATURES_SHOWN]):
        cells = "".join(f"<td>{_fmt(training[s][i])}</td>" for s in stats)
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    if len(names) > MAX_FEATURES_SHOWN:
        rows.append(
            f'<tr><td colspan="{len(stats) + 1}">... and '
            f"{len(names) - MAX_FEATURES_SHOWN} more</td></tr>"
        )
    caption = "features" + (" (training statistics)" if stats else "")
    return f"<table><caption>{caption}</caption>{head}{''.join(rows)}</table>"


def estimator_html(est) -> str:
    """A fitted model: kind, features (names), classes, outputs, size, dtype, params,
    training statistics when the file has them. Unfitted: its parameters."""
    model = getattr(est, "_model_", None)
    if model is None:
        return params_html(est)
    try:
        meta = json.loads(model.metadata)
    except ValueError:
        meta = {}
    rows = [
        ("kind", _e(meta.get("kind", model.kind))),
        ("task", _e(meta.get("task", ""))),
        ("features", _e(meta.get("n_features", model.n_features))),
    ]
    classes = meta.get("classes")
    if classes:
        rows.append(("classes", _e(f"{len(classes)}: " + _short(classes, MAX_CLASSES_SHOWN))))
    shape = meta.get("output_shape")
    outputs = meta.get("n_outputs")
    rows.append(("outputs", _e(f"{outputs}" + (f" (shape {list(shape)})" if shape else ""))))
    rows.append(("dtype", _e(meta.get("dtype", model.dtype))))
    rows.append(("size", _e(f"{model_size_bytes(model):,} bytes")))
    changed = changed_params(est)
    if changed:
        rows.append(("parameters", _e(", ".join(f"{k}={v!r}" for k, v in changed.items()))))
    training = meta.get("training") or {}
    if "n_samples" in training:
        rows.append(("training rows", _e(training["n_samples"])))
    for key in ("n_iter", "inertia"):
        if key in meta:
            rows.append((key, _fmt(meta[key])))
    for key in ("mlserve_version", "created_at"):
        if meta.get(key):
            rows.append((key.replace("_", " "), _e(meta[key])))
    caption = type(est).__name__
    return (
        f'<div class="mlserve-repr">{_STYLE}{_table(caption, rows)}'
        f"{_feature_table(meta) if meta.get('n_features') else ''}</div>"
    )


# ------------------------------------------------------------------- stores


def _targets(targets) -> str:
    if len(targets) == 1:
        return f"{targets[0].version}"
    total = sum(t.weight for t in targets) or 1.0  # weights are relative (90/10 or 0.9/0.1)
    return ", ".join(f"{t.version} ({t.weight / total:.0%})" for t in targets)


def store_rows(store) -> list[tuple[str, str, str, str]]:
    """(name, versions, latest, aliases) per model; an unreadable manifest says so."""
    from .store import StoreError

    rows = []
    for name in store.names()[:MAX_MODELS_SHOWN]:
        try:
            manifest = store.manifest(name)
        except StoreError as exc:
            rows.append((name, "?", "?", f"unreadable manifest: {exc}"))
            continue
        versions = sorted(manifest.versions)
        aliases = ", ".join(
            f"{alias} -> {_targets(targets)}" for alias, targets in sorted(manifest.aliases.items())
        )
        latest = "" if manifest.latest is None else str(manifest.latest)
        rows.append((name, _short(versions, 10) or "none", latest, aliases))
    return rows


def store_repr(store) -> str:
    head = f"ModelStore({str(store.root)!r})"
    try:
        rows = store_rows(store)
        total = len(store.names())
    except OSError as exc:
        return f"{head}  # unreadable: {exc}"
    if not rows:
        return f"{head}  # empty"
    width = max(len(r[0]) for r in rows)
    lines = [head]
    for name, versions, _latest, aliases in rows:
        line = f"  {name:<{width}}  versions {versions}"
        lines.append(line + (f"  aliases {aliases}" if aliases else ""))
    if total > len(rows):
        lines.append(f"  ... and {total - len(rows)} more models")
    return "\n".join(lines)


def store_html(store) -> str:
    try:
        rows = store_rows(store)
        total = len(store.names())
    except OSError as exc:
        return f"<pre>{_e(store_repr(store))}</pre><p>{_e(exc)}</p>"
    head = "<tr><th>model</th><th>versions</th><th>latest</th><th>aliases</th></tr>"
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    if total > len(rows):
        body += f'<tr><td colspan="4">... and {total - len(rows)} more models</td></tr>'
    if not rows:
        body = '<tr><td colspan="4">no models</td></tr>'
    caption = f"ModelStore {store.root}"
    return (
        f'<div class="mlserve-repr">{_STYLE}<table><caption>{_e(caption)}</caption>'
        f"{head}{body}</table></div>"
    )
