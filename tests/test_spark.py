"""mlserve.spark.predict_udf on a real PySpark session (local[2]), with parity against the
in-process predict on 100 000 rows, and mlflow.pyfunc.spark_udf through mlserve's flavor."""
import numpy as np
import pandas as pd
import pytest
from pyspark.errors import PythonException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import mlserve
from mlserve.spark import predict_udf

pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    # PySpark 4's toPandas passes copy= to pandas 3 (PySpark asks for pandas < 3 for now)
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated:pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]
FEATURES = [f"x{i}" for i in range(8)]
N = 100_000


@pytest.fixture(scope="module")
def spark():
    session = (SparkSession.builder.master("local[2]").appName("mlserve-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="module")
def data(spark):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(N, len(FEATURES))), columns=FEATURES)
    frame.insert(0, "id", np.arange(N))
    y = (frame.x0 + frame.x1 * frame.x2 > 0).astype(int).to_numpy()
    return frame, y, spark.createDataFrame(frame).repartition(4)


@pytest.fixture(scope="module")
def classifier(data, tmp_path_factory):
    frame, y, _ = data
    model = mlserve.LogisticRegression().fit(frame[FEATURES], y)
    path = tmp_path_factory.mktemp("spark") / "clf.mls"
    mlserve.save(model, path)
    return model, path


def collect(df, column):
    out = df.select("id", column).toPandas().sort_values("id")
    return out[column].to_numpy()


def test_labels_match_in_process_predict_on_100k_rows(data, classifier):
    frame, _, sdf = data
    model, path = classifier
    udf = predict_udf(path)
    got = collect(sdf.withColumn("pred", udf(*FEATURES)), "pred")
    np.testing.assert_array_equal(got, model.predict(frame[FEATURES]))


def test_a_struct_in_any_column_order_is_matched_by_name(data, classifier):
    frame, _, sdf = data
    model, path = classifier
    udf = predict_udf(path, output="proba")
    scored = sdf.limit(2000).withColumn("p", udf(F.struct(*reversed(FEATURES))))
    out = scored.select("id", "p").toPandas().sort_values("id")
    want = model.predict_proba(frame[FEATURES].iloc[out.id.to_numpy()])
    np.testing.assert_allclose(np.stack(out.p.to_numpy()), want, rtol=1e-12)


def test_regression_and_a_model_without_names(spark, data, tmp_path):
    frame, _, sdf = data
    target = frame.x0 * 2 - frame.x3
    model = mlserve.LinearRegression().fit(frame[FEATURES].to_numpy(), target)
    mlserve.save(model, tmp_path / "reg.mls")
    udf = predict_udf(tmp_path / "reg.mls")
    small = sdf.limit(5000)
    got = small.withColumn("y", udf(*FEATURES)).select("id", "y").toPandas().sort_values("id")
    assert dict(small.withColumn("y", udf(*FEATURES)).dtypes)["y"] == "double"
    want = model.predict(frame[FEATURES].to_numpy()[got.id.to_numpy()])
    np.testing.assert_allclose(got.y.to_numpy(), want, rtol=1e-12)


def test_mistakes_are_clear(data, classifier, tmp_path):
    _, _, sdf = data
    _, path = classifier
    with pytest.raises(ValueError, match="unknown output 'probas'"):
        predict_udf(path, output="probas")
    with pytest.raises(FileNotFoundError):
        predict_udf(tmp_path / "missing.mls")
    udf = predict_udf(path)
    with pytest.raises(TypeError, match="give the feature columns"):
        udf()
    renamed = sdf.limit(10).withColumnRenamed("x3", "x3_typo")
    cols = [c if c != "x3" else "x3_typo" for c in FEATURES]
    with pytest.raises(PythonException, match="missing feature 'x3'"):
        renamed.withColumn("pred", udf(*cols)).collect()


def test_mlflow_spark_udf_runs_through_the_mlserve_flavor(spark, data, classifier, tmp_path, monkeypatch):
    import mlflow

    import mlserve.mlflow as mls_mlflow

    frame, _, sdf = data
    model, _ = classifier
    mls_mlflow.save_model(model, tmp_path / "m")
    udf = mlflow.pyfunc.spark_udf(spark, str(tmp_path / "m"), env_manager="local")
    small = sdf.limit(3000)
    got = small.withColumn("pred", udf(*FEATURES)).select("id", "pred").toPandas().sort_values("id")
    want = model.predict(frame[FEATURES].iloc[got.id.to_numpy()])
    np.testing.assert_array_equal(got.pred.to_numpy(), want)
