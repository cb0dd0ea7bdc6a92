"""scikit-learn column transforms -> one C call per batch (issue 14; steps 1 and 2).

convert_column_transformer(ct) turns a fitted ColumnTransformer into a
ColumnTransform whose transform(X) runs mls_transform.c: numeric columns
through [SimpleImputer] + [one affine scaler] (imputer last when it adds an
indicator), string columns through OneHotEncoder / OrdinalEncoder (a hashed
lookup of the training categories in C), remainder drop / passthrough.
Step 2 adds string imputers, one-hot drop / infrequent categories (a category ->
column map asked of the fitted encoder), numpy-ufunc FunctionTransformers,
KBinsDiscretizer, and, between the ColumnTransformer and the final estimator,
Normalizer, PolynomialFeatures and PCA / TruncatedSVD; build_pipeline_model
writes all of it with the final model's arrays as one kind-7 model
(csrc/mls_pipeline.h describes the sections).
Anything else is a ConvertError naming the step and its class. Columns are
matched by name (feature_names_in_) when X is a DataFrame or a dict of
columns, or given as a list of records.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .._errors import ConvertError

NUMERIC, ONEHOT, ORDINAL, BINS = 0, 1, 2, 3
IGNORE, ERROR = 0, 1


def _op(kind, in_col, out_col, fill=0.0, mul=1.0, add=0.0, indicator=-1, cats=None,
        offsets=None, unknown_mode=IGNORE, unknown_value=0.0, missing=-1, cat_out=None,
        width=-1, unknown_out=-1, func=0, mul2=1.0, add2=0.0, edges=None, n_bins=0,
        onehot=0):
    return (kind, in_col, out_col, float(fill), float(mul), float(add), indicator, cats,
            offsets, unknown_mode, float(unknown_value), int(missing), cat_out, int(width),
            int(unknown_out), int(func), float(mul2), float(add2), edges, int(n_bins),
            int(onehot))


#: numpy ufuncs a FunctionTransformer may apply (MLS_FUNC_* in csrc/mls_transform.h).
_UFUNCS = {"log1p": 1, "log": 2, "exp": 3, "expm1": 4, "sqrt": 5, "absolute": 6, "log2": 7,
           "log10": 8, "square": 9, "tanh": 10}


def _ufunc_code(step, name):
    """MLS_FUNC_* of a FunctionTransformer's func (0: the identity); else a ConvertError."""
    f = step.func
    if f is None:
        return 0
    if step.kw_args:
        raise ConvertError(f"step {name!r} (FunctionTransformer): kw_args are not supported")
    if isinstance(f, np.ufunc) and f.__name__ in _UFUNCS and getattr(np, f.__name__) is f:
        return _UFUNCS[f.__name__]
    shown = getattr(f, "__name__", type(f).__name__)
    raise ConvertError(f"step {name!r} (FunctionTransformer): func {shown!r} is not a numpy "
                       "ufunc mlserve can run; supported: np." + ", np.".join(_UFUNCS))


#: A value no training category can be (asked of scikit-learn to find where unknowns go).
_PROBE_UNKNOWN = "\x00mlserve: an unseen category\x00"


def _onehot_map(enc, name, j):
    """(cat_out or None, width, unknown_out) of a fitted OneHotEncoder's feature j.

    With drop, min_frequency, max_categories or infrequent_if_exist, where each training
    category and an unknown value land is asked of the encoder itself: one transform of
    a row per category (the other features at their first category)."""
    cats = list(enc.categories_[j])
    plain = enc.drop is None and not getattr(enc, "_infrequent_enabled", False)
    if plain:
        return None, len(cats), -1
    widths = getattr(enc, "_n_features_outs", None)
    if widths is None:
        raise ConvertError(f"step {name!r} (OneHotEncoder): drop and infrequent categories "
                           "need scikit-learn >= 1.1")
    start, width = int(sum(widths[:j])), int(widths[j])
    probes = cats + ([_PROBE_UNKNOWN] if enc.handle_unknown != "error" else [])
    rows = np.empty((len(probes), len(enc.categories_)), dtype=object)
    for k, c in enumerate(enc.categories_):
        rows[:, k] = c[0]
    rows[:, j] = probes
    names = getattr(enc, "feature_names_in_", None)
    if names is not None:
        import pandas as pd

        rows = pd.DataFrame(rows, columns=list(names))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unknown categories ... encoded as zeros/infrequent"
        block = np.asarray(_dense(enc.transform(rows)))[:, start:start + width]
    where = [int(np.argmax(r)) if r.any() else -1 for r in block]
    unknown_out = where.pop() if enc.handle_unknown != "error" else -1
    return np.asarray(where, dtype=np.int64), width, unknown_out


def _dense(m):
    return m.toarray() if hasattr(m, "toarray") else m


def _is_nan(v):
    return isinstance(v, float) and np.isnan(v)


#: Stands for the missing-value category (None / NaN seen in training) in the category
#: bytes: not UTF-8, so no string value ever matches it; missing values reach it through
#: the op's missing_category.
_MISSING_PLACEHOLDER = b"\xff"


def _categories(step, name, cats, allow_missing=False):
    """(bytes, offsets, index of the missing category or -1) of an encoder's categories."""
    values = list(cats)
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float)
                                                                 and np.isnan(v))]
    if missing and not allow_missing:
        raise ConvertError(f"step {name!r} ({type(step).__name__}): a missing value (None/NaN) "
                           "as a category is supported for OneHotEncoder only yet")
    if not all(isinstance(v, str) for i, v in enumerate(values) if i not in missing):
        raise ConvertError(f"step {name!r} ({type(step).__name__}): only string categories "
                           f"are supported yet, got {values[:5]!r}")
    encoded = [_MISSING_PLACEHOLDER if i in missing else v.encode("utf-8")
               for i, v in enumerate(values)]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    return b"".join(encoded), offsets, (missing[0] if missing else -1)


def _affine(step, name, j):
    """(mul, add) of a fitted scaler for its column j."""
    cls = type(step).__name__
    if cls == "StandardScaler":
        mean = step.mean_[j] if step.mean_ is not None and step.with_mean else 0.0
        scale = step.scale_[j] if step.scale_ is not None else 1.0
        return 1.0 / scale, -mean / scale
    if cls == "MinMaxScaler":
        if step.clip:
            raise ConvertError(f"step {name!r} (MinMaxScaler): clip=True is not supported")
        return step.scale_[j], step.min_[j]
    if cls == "MaxAbsScaler":
        return 1.0 / step.scale_[j], 0.0
    if cls == "RobustScaler":
        center = step.center_[j] if step.center_ is not None else 0.0
        scale = step.scale_[j] if step.scale_ is not None else 1.0
        return 1.0 / scale, -center / scale
    raise ConvertError(f"step {name!r}: {cls} is not supported")


def _steps(transformer, name):
    cls = type(transformer).__name__
    if cls == "Pipeline":
        return [(f"{name}/{n}", s) for n, s in transformer.steps if s not in (None, "passthrough")]
    return [(name, transformer)]


class ColumnTransform:
    """A converted ColumnTransformer: transform(X) -> float64 (n, n_out)."""

    def __init__(self, feature_names, ops, n_out, string_columns, described=(),
                 categories=None):
        self.feature_names = list(feature_names)
        self.described = list(described)
        self._categories = dict(categories or {})
        used = sorted({op[1] for op in ops})  # dropped columns are not read
        remap = {c: k for k, c in enumerate(used)}
        self._used = [self.feature_names[c] for c in used]
        self._ops = [(op[0], remap[op[1]], *op[2:]) for op in ops]
        self.n_out = n_out
        self._string = {remap[c] for c in string_columns}
        self._plan = _core.transform_plan(self._ops)  # category hash tables built once
        self.projection = None  # (mean, weights) of a PCA / TruncatedSVD step after it
        self.normalize = 0  # a Normalizer step after it: 1 l1, 2 l2, 3 max
        self.poly = None  # the powers_ of a PolynomialFeatures step after it
        self.input_schema = [
            {"name": str(self.feature_names[c]),
             "kind": "string" if remap[c] in self._string else "numeric",
             "categories": ([str(v) for v in self._categories.get(c, [])]
                            if remap[c] in self._string else None)}
            for c in used]

    def sections(self) -> dict:
        """The pipe.* sections of kind 7 (csrc/mls_pipeline.h), final model excluded."""
        n_ops = len(self._ops)
        ops = np.zeros((n_ops, 12), dtype=np.int64)
        ops[:, 8:11] = -1
        cat_outs, n_cat_out = [], 0
        bin_edges, n_edges = [], 0
        params = np.zeros((n_ops, 6), dtype=np.float64)
        missing = np.full(n_ops, -1, dtype=np.int64)
        offsets, blobs, n_offs, n_bytes = [], [], 0, 0
        for k, op in enumerate(self._ops):
            kind, in_col, out_col, fill, mul, add, ind, cats, offs, mode, unknown = op[:11]
            cat_out, width, unknown_out, func, mul2, add2, edges, n_bins, onehot = op[12:21]
            ops[k, :5] = (kind, in_col, out_col, ind, mode)
            params[k] = (fill, mul, add, unknown, mul2, add2)
            ops[k, 11] = func
            if kind == BINS:
                ops[k, 5], ops[k, 6], ops[k, 9] = n_bins, n_edges, onehot
                bin_edges.append(edges)
                n_edges += len(edges)
            elif kind != NUMERIC:
                missing[k] = op[11]
                ops[k, 5:8] = (len(offs) - 1, n_offs, n_bytes)
                if cat_out is not None:
                    ops[k, 8:11] = (n_cat_out, width, unknown_out)
                    cat_outs.append(np.asarray(cat_out, dtype=np.int64))
                    n_cat_out += len(cat_out)
                offsets.append(np.asarray(offs, dtype=np.int64))
                blobs.append(cats)
                n_offs += len(offs)
                n_bytes += len(cats)
        kinds = np.array([1 if c in self._string else 0 for c in range(len(self._used))],
                         dtype=np.int64)
        return {
            "pipe.columns": kinds,
            "pipe.ops": ops,
            "pipe.params": params,
            "pipe.missing": missing,
            "pipe.cat_offsets": np.concatenate(offsets + [np.zeros(1, np.int64)]),
            "pipe.cat_bytes": np.frombuffer(b"".join(blobs) + b"\0", dtype=np.uint8).copy(),
            "pipe.cat_out": np.concatenate(cat_outs + [np.full(1, -1, np.int64)]),
            **({"pipe.proj_mean": self.projection[0], "pipe.proj_weights": self.projection[1]}
               if self.projection is not None else {}),
            **({"pipe.normalize": np.array([self.normalize], dtype=np.int64)}
               if self.normalize else {}),
            **({"pipe.poly_powers": self.poly} if self.poly is not None else {}),
            **({"pipe.bin_edges": np.concatenate(bin_edges + [np.zeros(1)])}
               if bin_edges else {}),
        }

    def _columns(self, X):
        names = self._used
        if isinstance(X, list):
            X = {n: [rec[n] if n in rec else _missing(n) for rec in X] for n in names} \
                if all(isinstance(r, dict) for r in X) else X
        cols = []
        for i, n in enumerate(names):
            try:
                values = X[n]
            except (KeyError, TypeError, IndexError):
                raise ValueError(f"missing column {n!r}") from None
            if hasattr(values, "to_numpy"):
                if i in self._string:
                    values = values.astype(object).to_numpy(dtype=object, na_value=None)
                else:
                    values = values.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                values = np.asarray(values, dtype=object if i in self._string else None)
                if i not in self._string:
                    values = np.array([np.nan if v is None else v for v in values.tolist()],
                                      dtype=np.float64)
            cols.append(values)
        return cols

    def transform(self, X):
        return _core.transform_apply(self._plan, self._columns(X), self.n_out)


def _missing(name):
    raise ValueError(f"missing column {name!r}")


def convert_column_transformer(ct):
    if type(ct).__name__ != "ColumnTransformer":
        raise ConvertError(f"expected a ColumnTransformer, got {type(ct).__name__}")
    if not hasattr(ct, "transformers_"):
        raise ConvertError("the ColumnTransformer is not fitted")
    names = list(getattr(ct, "feature_names_in_", range(ct.n_features_in_)))
    index = {n: i for i, n in enumerate(names)}
    ops, out, strings = [], 0, set()
    described, categories = [], {}
    for tname, transformer, cols in ct.transformers_:
        if transformer == "drop":
            continue
        if isinstance(cols, (slice, str)) or np.isscalar(cols):
            raise ConvertError(f"transformer {tname!r}: give columns as a list")
        idx = [index[c] if not isinstance(c, (int, np.integer)) else int(c) for c in cols]
        if len(idx) and np.asarray(cols).dtype == bool:
            idx = [i for i, keep in enumerate(cols) if keep]
        identity = (type(transformer).__name__ == "FunctionTransformer"
                    and transformer.func is None)  # remainder="passthrough" in sklearn >= 1.4
        if identity or transformer == "passthrough":
            described.append({"name": tname, "steps": ["passthrough"],
                              "columns": [str(names[i]) for i in idx]})
            for i in idx:
                ops.append(_op(NUMERIC, i, out, fill=np.nan))
                out += 1
            continue
        steps = _steps(transformer, tname)
        kinds = [type(s).__name__ for _, s in steps]
        described.append({"name": tname, "steps": kinds,
                          "columns": [str(names[i]) for i in idx]})
        if kinds and kinds[-1] in ("OneHotEncoder", "OrdinalEncoder"):
            imputer = None
            if len(steps) == 2 and kinds[0] == "SimpleImputer":
                imputer = steps[0]
            elif len(steps) != 1:
                raise ConvertError(f"transformer {tname!r}: an encoder may follow only one "
                                   "SimpleImputer yet, got " + ", ".join(kinds))
            sname, enc = steps[-1]
            if imputer is not None:
                iname, imp = imputer
                if imp.indicator_ is not None:
                    raise ConvertError(f"step {iname!r} (SimpleImputer): add_indicator before "
                                       "an encoder is not supported yet")
                if not (imp.missing_values is None or _is_nan(imp.missing_values)):
                    raise ConvertError(f"step {iname!r} (SimpleImputer): missing_values must "
                                       "be NaN or None for a string column")
            for j, i in enumerate(idx):
                cats, offsets, missing = _categories(enc, sname, enc.categories_[j],
                                                     kinds[-1] == "OneHotEncoder")
                if imputer is not None:
                    fill = imputer[1].statistics_[j]
                    if not isinstance(fill, str):
                        raise ConvertError(f"step {imputer[0]!r} (SimpleImputer): the fill "
                                           f"value of a string column must be a string, got "
                                           f"{fill!r}")
                    known = list(enc.categories_[j])
                    missing = known.index(fill) if fill in known else -1
                strings.add(i)
                categories.setdefault(i, [])
                categories[i].extend(c for c in enc.categories_[j]
                                     if isinstance(c, str) and c not in categories[i])
                if kinds[-1] == "OneHotEncoder":
                    mode = ERROR if enc.handle_unknown == "error" else IGNORE
                    cat_out, width, unknown_out = _onehot_map(enc, sname, j)
                    ops.append(_op(ONEHOT, i, out, cats=cats, offsets=offsets,
                                   unknown_mode=mode, missing=missing, cat_out=cat_out,
                                   width=width, unknown_out=unknown_out))
                    out += width
                else:
                    if enc.handle_unknown == "use_encoded_value":
                        mode, value = IGNORE, enc.unknown_value
                    else:
                        mode, value = ERROR, 0.0
                    ops.append(_op(ORDINAL, i, out, cats=cats, offsets=offsets,
                                   unknown_mode=mode, unknown_value=value, missing=missing))
                    out += 1
            continue
        # numeric: [SimpleImputer] then affine scalers
        fill = [np.nan] * len(idx)
        mul = [1.0] * len(idx)
        add = [0.0] * len(idx)
        indicator = None
        func, mul2, add2 = 0, [1.0] * len(idx), [0.0] * len(idx)
        bins = None
        for k, (sname, step) in enumerate(steps):
            cls = type(step).__name__
            if cls == "KBinsDiscretizer":
                if k != len(steps) - 1:
                    raise ConvertError(f"step {sname!r} (KBinsDiscretizer): must be the last "
                                       "step of its pipeline yet")
                if step.encode not in ("ordinal", "onehot", "onehot-dense"):
                    raise ConvertError(f"step {sname!r} (KBinsDiscretizer): encode "
                                       f"{step.encode!r} is not supported")
                bins = step
                continue
            if cls == "FunctionTransformer":
                if func:
                    raise ConvertError(f"step {sname!r} (FunctionTransformer): one function "
                                       "per column pipeline is supported yet")
                func = _ufunc_code(step, sname)  # 0: the identity, nothing to do
                continue
            if cls == "SimpleImputer":
                if k != 0:
                    raise ConvertError(f"step {sname!r} (SimpleImputer): must come first")
                if step.indicator_ is not None:
                    if k != len(steps) - 1:
                        raise ConvertError(f"step {sname!r} (SimpleImputer): add_indicator "
                                           "must be the last step of its pipeline")
                    indicator = list(step.indicator_.features_)
                fill = [float(v) for v in step.statistics_]
                continue
            for j in range(len(idx)):
                m, a = _affine(step, sname, j)
                if func:  # after the function: y = f(v) * mul2 + add2
                    mul2[j], add2[j] = mul2[j] * m, add2[j] * m + a
                else:
                    mul[j], add[j] = mul[j] * m, add[j] * m + a
        if bins is not None:
            if indicator is not None:
                raise ConvertError("SimpleImputer(add_indicator=True) before a "
                                   "KBinsDiscretizer is not supported")
            onehot = int(bins.encode != "ordinal")
            for j, i in enumerate(idx):
                n_bins = int(bins.n_bins_[j])
                edges = np.ascontiguousarray(bins.bin_edges_[j][1:-1], dtype=np.float64)
                ops.append(_op(BINS, i, out, fill=fill[j], mul=mul[j], add=add[j], func=func,
                               mul2=mul2[j], add2=add2[j], edges=edges, n_bins=n_bins,
                               onehot=onehot))
                out += n_bins if onehot else 1
            continue
        n_main = len(idx)
        for j, i in enumerate(idx):
            ind = -1
            if indicator is not None and j in indicator:
                ind = out + n_main + indicator.index(j)
            ops.append(_op(NUMERIC, i, out + j, fill=fill[j], mul=mul[j], add=add[j],
                           indicator=ind, func=func, mul2=mul2[j], add2=add2[j]))
        out += n_main + (len(indicator) if indicator is not None else 0)
    return ColumnTransform(names, ops, out, strings, described, categories)


# Final estimators a converted Pipeline may end with (their existing converters run).
FINAL_ESTIMATORS = (
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.cluster._kmeans.KMeans",
    "sklearn.cluster._kmeans.MiniBatchKMeans",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
)


_KIND_NUMBERS = {"linear_regressor": 1, "logistic_regression": 2, "tree_ensemble": 3,
                 "kmeans": 4, "graph": 6}


def build_pipeline_model(transform, final, steps):
    """One kind-7 model: the transform's sections and the final model's (None: a bare
    ColumnTransformer), with the input schema and the steps in the metadata."""
    import datetime
    import json

    from .._estimators import FORMAT_VERSION, _library_version
    from .._pipeline import PipelineModel

    arrays = transform.sections()
    final_kind, final_meta = 0, None
    width = (len(transform.projection[1]) if transform.projection is not None
             else len(transform.poly) if transform.poly is not None else transform.n_out)
    meta = {"task": "transform", "n_outputs": width,
            "output_shape": [width], "classes": None, "classes_dtype": None}
    if final is not None:
        core = final._fitted_model()
        final_kind = _KIND_NUMBERS[core.kind]
        final_meta = json.loads(core.metadata)
        for name, value in core.arrays().items():
            arrays["final." + name] = value
        meta = {k: final_meta.get(k) for k in ("task", "n_outputs", "output_shape", "classes",
                                                 "classes_dtype")}
    arrays["pipe.header"] = np.array([len(transform._used), transform.n_out, final_kind,
                                      len(transform._ops), 1], dtype=np.int64)
    meta.update({
        "kind": "pipeline",
        "estimator": "PipelineModel",
        "params": {},
        "n_features": len(transform._used),
        "feature_names": [str(n) for n in transform._used],
        "dtype": "float64",
        "input_schema": transform.input_schema,
        "steps": steps,
        "final": final_meta,
        "mlserve_version": _library_version(),
        "format_version": FORMAT_VERSION,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    })
    model = PipelineModel()
    model._install(_core.create("pipeline", arrays, json.dumps(meta)))
    return model


def _ct_step(name, ct, transform):
    return {"name": name, "class": type(ct).__name__, "transformers": transform.described}


#: Steps that may stand between the ColumnTransformer and the final estimator: linear
#: projections, run in C after the column transform (pipe.proj_mean / pipe.proj_weights).
PROJECTIONS = ("PCA", "TruncatedSVD")


def _projection(step, name):
    """(mean, weights) with transformed = (x - mean) @ weights.T, as step.transform."""
    cls = type(step).__name__
    components = np.asarray(step.components_, dtype=np.float64)
    if cls == "PCA":
        weights = components
        if step.whiten:
            weights = components / np.sqrt(np.asarray(step.explained_variance_))[:, None]
        return np.asarray(step.mean_, dtype=np.float64), np.ascontiguousarray(weights)
    if cls == "TruncatedSVD":
        return np.zeros(components.shape[1]), np.ascontiguousarray(components)
    raise ConvertError(f"step {name!r}: {cls} is not supported")


def convert_pipeline(pipe, dtype, converters):
    """Pipeline([ColumnTransformer, (PCA | TruncatedSVD), final estimator]) -> PipelineModel
    (the projection and the final estimator optional)."""
    from ._common import qualified_name

    steps = [(n, s) for n, s in getattr(pipe, "steps", []) if s not in (None, "passthrough")]
    shape = ("a Pipeline must be (ColumnTransformer, [Normalizer], [PolynomialFeatures], "
             "[PCA | TruncatedSVD], "
             "final estimator) "
             "yet; got " + (", ".join(f"{n!r} ({type(s).__name__})" for n, s in steps)
                            or "no steps"))
    if not steps:
        raise ConvertError(shape)
    (tname, ct), rest = steps[0], steps[1:]
    if type(ct).__name__ != "ColumnTransformer":
        raise ConvertError(f"step {tname!r} ({type(ct).__name__}): the first step of a "
                           "Pipeline must be a ColumnTransformer yet")
    normalizer = rest.pop(0) if rest and type(rest[0][1]).__name__ == "Normalizer" else None
    poly = (rest.pop(0) if rest and type(rest[0][1]).__name__ == "PolynomialFeatures"
            else None)
    proj = rest.pop(0) if rest and type(rest[0][1]).__name__ in PROJECTIONS else None
    if len(rest) > 1:
        raise ConvertError(shape)
    transform = convert_column_transformer(ct)
    described = [_ct_step(tname, ct, transform)]
    if normalizer is not None:
        nname, nstep = normalizer
        transform.normalize = {"l1": 1, "l2": 2, "max": 3}[nstep.norm]
        described.append({"name": nname, "class": "Normalizer"})
    width = transform.n_out
    if poly is not None:
        pname, pstep = poly
        powers = np.ascontiguousarray(pstep.powers_, dtype=np.int64)
        if powers.shape[1] != transform.n_out:
            raise ConvertError(f"step {pname!r} takes {powers.shape[1]} features, the "
                               f"ColumnTransformer {tname!r} gives {transform.n_out}")
        if powers.max(initial=0) > 16:
            raise ConvertError(f"step {pname!r} (PolynomialFeatures): degree above 16")
        transform.poly = powers
        width = powers.shape[0]
        described.append({"name": pname, "class": "PolynomialFeatures"})
    if proj is not None:
        pname, pstep = proj
        if not hasattr(pstep, "components_"):
            raise ConvertError(f"step {pname!r} ({type(pstep).__name__}) is not fitted")
        mean, weights = _projection(pstep, pname)
        if weights.shape[1] != width:
            raise ConvertError(f"step {pname!r} takes {weights.shape[1]} features, the "
                               f"steps before it give {width}")
        transform.projection = (mean, weights)
        width = weights.shape[0]
        described.append({"name": pname, "class": type(pstep).__name__})
    if not rest:
        return build_pipeline_model(transform, None, described)
    fname, final = rest[0]
    fqn = qualified_name(type(final))
    if fqn not in FINAL_ESTIMATORS:
        raise ConvertError(f"step {fname!r} ({type(final).__name__}): unsupported final "
                           "estimator; supported: " + ", ".join(
                               n.rsplit(".", 1)[1] for n in FINAL_ESTIMATORS))
    converted = converters[fqn](final, dtype)
    n_in = getattr(converted, "n_features_in_", width)
    if n_in != width:
        raise ConvertError(f"step {fname!r} expects {n_in} features, the steps before it "
                           f"give {width}")
    described.append({"name": fname, "class": type(final).__name__})
    return build_pipeline_model(transform, converted, described)


def _convert_bare_column_transformer(ct, dtype):
    transform = convert_column_transformer(ct)
    return build_pipeline_model(transform, None, [_ct_step("columns", ct, transform)])


CONVERTERS = {
    "sklearn.compose._column_transformer.ColumnTransformer":
        _convert_bare_column_transformer,
}
