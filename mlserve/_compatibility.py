"""Can one model version take another's traffic? A comparison of two ``.mls`` metadata dicts.

The store calls :func:`compatibility_problems` before it points an alias at a
version (publish with an alias, set_alias, a canary split), so a client of
``production`` never silently starts talking to a model with other inputs or
outputs. Only the metadata JSON is read (the manifest keeps a copy of it per
version); no model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["compatibility_problems"]

MAX_LISTED = 8  # names shown in a message before it says how many more there are
DEFAULT_DTYPE = "float64"  # what a model without a dtype in its metadata takes (LoadedModel)


def compatibility_problems(
    served: Mapping[str, Any],
    candidate: Mapping[str, Any],
    *,
    candidate_label: str = "the new version",
    served_label: str = "the alias",
    served_version: int | None = None,
) -> list[str]:
    """What would change for a client if ``candidate`` answered instead of ``served``.

    Parameters
    ----------
    served, candidate : mapping
        The metadata of two models (``model.metadata``, or a manifest's copy).
    candidate_label : str
        How messages name the candidate, e.g. ``"version 3"``.
    served_label : str
        How messages name what serves now, e.g. ``"production"``.
    served_version : int, optional
        The served version, added to each message as ``"(version 2)"``.

    Returns
    -------
    list of str
        One sentence per difference, empty when the candidate is compatible:
        the same task, number, names and order of features, classes (values and
        order), number of clusters (k-means), input dtype and shape, and outputs. Feature names in another
        order are a difference: columns given by name are matched by name, but
        a client sending NumPy rows or lists by position would silently feed
        the wrong features.
    """
    new, old = candidate_label, served_label
    at = f" (version {served_version})" if served_version is not None else ""
    problems: list[str] = []
    if "recommender" in (candidate.get("task"), served.get("task")):
        return _recommender_problems(served, candidate, new, old, at)

    task_new, task_old = candidate.get("task"), served.get("task")
    if task_new != task_old:
        problems.append(f"{new} is {_task(task_new)}, {old} serves {_task(task_old)}{at}")

    n_new, n_old = candidate.get("n_features"), served.get("n_features")
    if n_new != n_old:
        problems.append(f"{new} has {n_new} features, {old} serves {n_old}{at}")

    names_problem = _feature_names_problem(
        candidate.get("feature_names"), served.get("feature_names"), new, old, at
    )
    if names_problem:
        problems.append(names_problem)

    problems.extend(_input_schema_problems(candidate.get("input_schema"),
                                           served.get("input_schema"), new, old, at))

    shape_new, shape_old = candidate.get("input_shape"), served.get("input_shape")
    if (shape_new is not None or shape_old is not None) and shape_new != shape_old:
        problems.append(f"{new} takes input of shape {shape_new}, {old} serves {shape_old}{at}")

    dtype_new = candidate.get("dtype") or DEFAULT_DTYPE
    dtype_old = served.get("dtype") or DEFAULT_DTYPE
    if dtype_new != dtype_old:
        problems.append(f"{new} takes {dtype_new} input, {old} serves {dtype_old}{at}")

    # a classifier against a regressor: the task says it; the classes would only repeat it
    classes_problem = _classes_problem(candidate, served, new, old, at)
    if classes_problem and task_new == task_old:
        problems.append(classes_problem)

    # k-means: the cluster ids a client gets back, and the distances' width
    k_new, k_old = candidate.get("n_clusters"), served.get("n_clusters")
    if task_new == task_old and (k_new is not None or k_old is not None) and k_new != k_old:
        problems.append(f"{new} has {k_new} clusters, {old} serves {k_old}{at}")

    out_new = list(candidate.get("output_shape") or [])
    out_old = list(served.get("output_shape") or [])
    if out_new != out_old:
        problems.append(
            f"{new} predicts {_per_row(out_new)} per row, {old} serves {_per_row(out_old)}{at}"
        )
    return problems


def _input_schema_problems(schema_new, schema_old, new: str, old: str, at: str) -> list[str]:
    """Pipelines: a column whose kind changed (numeric / string), or string categories the
    served version knows and the candidate does not (clients sending them would get the
    unknown-category answer)."""
    if schema_new is None and schema_old is None:
        return []
    if schema_new is None or schema_old is None:
        has = new if schema_new is not None else old
        return [f"{has} takes named columns of mixed types (a pipeline), the other does not{at}"]
    problems = []
    old_by_name = {c.get("name"): c for c in schema_old}
    for col in schema_new:
        prev = old_by_name.get(col.get("name"))
        if prev is None:
            continue  # a new column is already a feature-names difference
        if col.get("kind") != prev.get("kind"):
            problems.append(f"{new} takes column {col.get('name')!r} as {col.get('kind')}, "
                            f"{old} as {prev.get('kind')}{at}")
            continue
        lost = [c for c in (prev.get("categories") or [])
                if c not in set(col.get("categories") or [])]
        if lost:
            problems.append(f"{new} does not know categories {_listed(lost)} of column "
                            f"{col.get('name')!r} that {old} knows{at}")
    return problems


def _task(task: Any) -> str:
    if not task:
        return "a model of unknown task"
    return f"{'an' if str(task)[0] in 'aeiou' else 'a'} {task} model"


def _per_row(shape: Sequence[int]) -> str:
    if not shape:
        return "1 value"
    if len(shape) == 1:
        return f"{shape[0]} value{'s' if shape[0] != 1 else ''}"
    return f"an array of shape {list(shape)}"


def _listed(values: Sequence[Any] | None) -> str:
    if values is None:
        return "none"
    values = list(values)
    if len(values) <= MAX_LISTED:
        return repr(values)
    shown = ", ".join(repr(v) for v in values[:MAX_LISTED])
    return f"[{shown}, ...] ({len(values)} in all)"


def _feature_names_problem(
    names_new: Sequence[str] | None, names_old: Sequence[str] | None, new: str, old: str, at: str
) -> str | None:
    names_new = list(names_new) if names_new else None
    names_old = list(names_old) if names_old else None
    if names_new == names_old:
        return None
    if names_new is None:
        return (
            f"{new} has no feature names, {old} serves feature names {_listed(names_old)}{at}"
            " (clients that send columns by name would be refused)"
        )
    if names_old is None:
        return (
            f"{new} has feature names {_listed(names_new)}, {old} serves a model"
            f" without feature names{at} (clients' column names would be checked against them)"
        )
    if sorted(names_new) == sorted(names_old):
        first = next(i for i, (a, b) in enumerate(zip(names_new, names_old)) if a != b)
        return (
            f"{new} has the feature names of {old}{at} in another order (from column {first}:"
            f" {_listed(names_new[first:])} instead of {_listed(names_old[first:])}); clients"
            " that send rows by position (NumPy arrays, lists) would feed the wrong features"
        )
    missing = [n for n in names_old if n not in set(names_new)]
    extra = [n for n in names_new if n not in set(names_old)]
    details = []
    if missing:
        details.append(f"without {_listed(missing)}")
    if extra:
        details.append(f"with {_listed(extra)} instead")
    return (
        f"{new} feature names {_listed(names_new)} differ from {old}'s {_listed(names_old)}{at}"
        f" ({', '.join(details)})"
    )


def _classes_problem(
    candidate: Mapping[str, Any], served: Mapping[str, Any], new: str, old: str, at: str
) -> str | None:
    classes_new, classes_old = candidate.get("classes"), served.get("classes")
    if classes_new is None and classes_old is None:
        return None
    if classes_new is not None and classes_old is not None:
        if list(classes_new) == list(classes_old):
            # 1 and 1.0 compare equal but a client reads "1" or "1.0" back
            kind_new = _label_kind(candidate.get("classes_dtype"))
            kind_old = _label_kind(served.get("classes_dtype"))
            if kind_new and kind_old and kind_new != kind_old:
                return f"{new} class labels are {kind_new}s, {old}'s are {kind_old}s{at}"
            return None
        if sorted(map(repr, classes_new)) == sorted(map(repr, classes_old)):
            return (
                f"{new} classes {_listed(classes_new)} are {old}'s {_listed(classes_old)}{at}"
                " in another order (predict_proba's columns would change meaning)"
            )
    return f"{new} classes {_listed(classes_new)} differ from {old}'s {_listed(classes_old)}{at}"


def _label_kind(dtype: Any) -> str | None:
    if not dtype:
        return None
    code = str(dtype).lstrip("<>=|")[:1]
    return {"i": "integer", "u": "integer", "f": "float", "b": "boolean", "U": "string",
            "S": "string", "O": "string"}.get(code)  # fmt: skip


def _recommender_problems(
    served: Mapping[str, Any], candidate: Mapping[str, Any], new: str, old: str, at: str
) -> list[str]:
    """A recommender is called with ids, not feature rows, so what a client sees is
    the task and the types of the ids it sends and gets back.

    Compatible: another factor dimension or dtype (inputs are ids, not vectors),
    other item ids (the catalogue changes) and other user ids (users come and go;
    an unknown one is a 400 naming it). Not compatible: a change of the type of the
    user ids a client sends (int <-> str, or ids <-> indices), or of the item ids
    it gets back.
    """
    task_new, task_old = candidate.get("task"), served.get("task")
    if task_new != task_old:
        return [f"{new} is {_task(task_new)}, {old} serves {_task(task_old)}{at}"]
    problems = []
    for who, role in (("user", "takes"), ("item", "returns")):
        kind_new = candidate.get(f"{who}_id_type")
        kind_old = served.get(f"{who}_id_type")
        if kind_new != kind_old:
            problems.append(
                f"{new} {role} {_ids(kind_new, who)}, {old} serves {_ids(kind_old, who)}{at}"
            )
    return problems


def _ids(kind: Any, who: str) -> str:
    if kind in ("int", "str"):
        return f"{'integer' if kind == 'int' else 'string'} {who} ids"
    return f"{who} indices (no {who} ids)"
