"""mlserve.dask.predict over dask DataFrames and arrays (local scheduler), with parity
against the in-process predict on 100 000 rows."""
import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import mlserve
import mlserve.dask as mls_dask

FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(100_000, 4)), columns=FEATURES)
    y = np.where(frame.a - frame.b > 0, "yes", "no")
    model = mlserve.LogisticRegression().fit(frame, y)
    path = tmp_path_factory.mktemp("dask") / "clf.mls"
    mlserve.save(model, path)
    return frame, model, path


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_dataframe_labels_match_in_process_predict(data, scheduler):
    frame, model, path = data
    ddf = dd.from_pandas(frame, npartitions=7)
    with dask.config.set(scheduler=scheduler):
        got = mls_dask.predict(ddf, path).compute()
    assert isinstance(got, pd.Series) and got.index.equals(frame.index)
    np.testing.assert_array_equal(got.to_numpy(), model.predict(frame))


def test_dataframe_proba_has_a_column_per_class_and_columns_match_by_name(data):
    frame, model, path = data
    ddf = dd.from_pandas(frame[["d", "c", "b", "a"]], npartitions=4)
    got = mls_dask.predict(ddf, path, output="proba").compute()
    assert list(got.columns) == ["no", "yes"]
    np.testing.assert_allclose(got.to_numpy(), model.predict_proba(frame), rtol=1e-12)


def test_array_blocks_split_by_rows_and_columns(data):
    frame, model, path = data
    X = frame.to_numpy()
    arr = da.from_array(X, chunks=(9_999, 2))           # column chunks are joined first
    labels = mls_dask.predict(arr, path).compute()
    np.testing.assert_array_equal(labels, model.predict(X))
    proba = mls_dask.predict(arr, path, output="proba")
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.compute(), model.predict_proba(X), rtol=1e-12)


def test_mistakes_are_clear(data, tmp_path):
    frame, _, path = data
    with pytest.raises(TypeError, match="takes a dask DataFrame or array, got DataFrame"):
        mls_dask.predict(frame, path)
    with pytest.raises(ValueError, match="expected a 2-D dask array, got 1 dimensions"):
        mls_dask.predict(da.zeros(10), path)
    with pytest.raises(ValueError, match="unknown output 'distance'"):
        mls_dask.predict(dd.from_pandas(frame, npartitions=2), path, output="distance")
    with pytest.raises(FileNotFoundError):
        mls_dask.predict(dd.from_pandas(frame, npartitions=2), tmp_path / "nope.mls")
    bad = dd.from_pandas(frame.rename(columns={"c": "cc"}), npartitions=2)
    with pytest.raises(ValueError, match="missing feature 'c'"):
        mls_dask.predict(bad, path).compute()


def test_a_replaced_file_is_loaded_again(data, tmp_path):
    frame, model, _ = data
    path = tmp_path / "m.mls"
    mlserve.save(model, path)
    ddf = dd.from_pandas(frame[:1000], npartitions=2)
    first = mls_dask.predict(ddf, path).compute()
    flipped = mlserve.LogisticRegression().fit(frame, np.where(frame.a - frame.b > 0, "no", "yes"))
    mlserve.save(flipped, path)
    second = mls_dask.predict(ddf, path).compute()
    assert (first.to_numpy() != second.to_numpy()).mean() > 0.95
