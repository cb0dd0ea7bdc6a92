"""Offline scoring in Spark: rows/s of mlserve.spark.predict_udf vs mlflow.pyfunc.spark_udf.

    python benchmarks/bench_spark.py              # ~2-4 min: 1M rows x 20 features, 3 rounds
    python benchmarks/bench_spark.py --quick      # 100k rows, 1 round

One PySpark session in local[2] mode (both cores), one cached DataFrame, one scikit-learn
LogisticRegression fitted on it. The contenders score every row into Spark's `noop` sink
(the full computation, no output written), after one untimed warm-up pass each, in
rotation, one round at a time:

* mlserve: `mlserve.convert(sklearn_model)` saved as .mls, `mlserve.spark.predict_udf`;
* mlflow: the same scikit-learn model logged with `mlflow.sklearn.save_model`, scored by
  `mlflow.pyfunc.spark_udf(spark, path, env_manager="local")` (what MLflow users run);
* pandas_udf: a hand-written scalar pandas UDF closing over the scikit-learn model
  (`model.predict(pd.concat(cols, axis=1))`), the usual do-it-yourself version.

Both mlserve and MLflow answer labels; outputs are checked equal before timing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import fmt_rate, fmt_ratio, load_average, machine_lines, markdown_table

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (1 if args.quick else 3)
    n_features = 20

    import mlflow
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf
    from sklearn.linear_model import LogisticRegression

    import mlserve
    from mlserve.spark import predict_udf

    print("\n".join(machine_lines(["numpy", "pandas", "pyarrow", "scikit-learn", "pyspark", "mlflow-skinny"])))
    print(f"load average {load_average()} (start)")
    features = [f"x{i}" for i in range(n_features)]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(rows, n_features)), columns=features)
    y = (X.x0 + X.x1 - X.x2 > 0).astype(np.int64)
    sk_model = LogisticRegression(max_iter=200).fit(X, y)

    spark = (SparkSession.builder.master("local[2]").appName("bench_spark")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.driver.memory", "4g")
             .config("spark.driver.host", "127.0.0.1").getOrCreate())
    print(f"pyspark {spark.version}, mlflow {mlflow.__version__}, local[2]")
    sdf = spark.createDataFrame(X).repartition(4).cache()
    sdf.count()

    with tempfile.TemporaryDirectory() as tmp:
        mls_path = os.path.join(tmp, "clf.mls")
        mlserve.save(mlserve.convert(sk_model), mls_path)
        signature = mlflow.models.infer_signature(X[:5], sk_model.predict(X[:5]))   # column names
        mlflow.sklearn.save_model(sk_model, os.path.join(tmp, "sk"), signature=signature,
                                  serialization_format="cloudpickle")
        udfs = {
            "mlserve": predict_udf(mls_path),
            "mlflow": mlflow.pyfunc.spark_udf(spark, os.path.join(tmp, "sk"), env_manager="local",
                                              result_type="long"),
        }

        @pandas_udf("long")
        def by_hand(*cols: pd.Series) -> pd.Series:
            frame = pd.concat(cols, axis=1)
            frame.columns = features
            return pd.Series(sk_model.predict(frame))

        udfs["pandas_udf"] = by_hand

        sample = sdf.limit(5000)
        got = {name: sample.select(udf(*features).alias("p")).toPandas().p.to_numpy()
               for name, udf in udfs.items()}
        for name, labels in got.items():
            np.testing.assert_array_equal(labels, got["mlserve"], err_msg=name)

        times = {name: [] for name in udfs}
        for name, udf in udfs.items():   # warm-up: python workers started, imports and model loads
            sdf.select(udf(*features).alias("p")).write.format("noop").mode("overwrite").save()
        for _ in range(rounds):
            for name, udf in udfs.items():
                start = time.perf_counter()
                sdf.select(udf(*features).alias("p")).write.format("noop").mode("overwrite").save()
                times[name].append(time.perf_counter() - start)
    spark.stop()

    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"load average {load_average()} (end)")
    print(f"\n{rows:,} rows x {n_features} features, LogisticRegression, {rounds} rounds, medians\n")
    table = [[name, f"{median[name]:.2f} s", fmt_rate(rows / median[name]),
              fmt_ratio(median[name] / median["mlserve"]),
              " / ".join(f"{t:.2f}" for t in times[name])] for name in udfs]
    print(markdown_table(["scorer", "time", "rows/s", "time / mlserve", "rounds (s)"], table))


if __name__ == "__main__":
    main()
