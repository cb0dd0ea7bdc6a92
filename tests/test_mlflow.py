"""mlserve.mlflow: the mlserve flavor, the python_function flavor, logging and the registry,
against the real MLflow client (mlflow-skinny) with a local file tracking URI."""
import os

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model
from sklearn.ensemble import RandomForestClassifier

import mlserve
import mlserve.mlflow as mls_mlflow

pytestmark = [
    # MLflow's own input-example code compares an Index with a range (pandas 3 deprecation)
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated:pandas.errors.Pandas4Warning"),
    # printed by MLflow's own pyfunc module when it is first imported
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
]


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # the file store, as the issue asks
    uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=["age", "income", "tenure", "visits"])
    y = np.where(X.age + 0.5 * X.income > 0, "churn", "stay")
    return X, y


def test_log_and_load_round_trip(tracking, frame):
    X, y = frame
    model = mlserve.LogisticRegression().fit(X, y)
    with mlflow.start_run():
        info = mls_mlflow.log_model(model, name="model", input_example=X[:3],
                                    registered_model_name="churn")
    loaded = mls_mlflow.load_model(info.model_uri)
    assert isinstance(loaded, mlserve.LogisticRegression)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_array_equal(pyfunc.predict(X), model.predict(X))
    registered = mlflow.pyfunc.load_model("models:/churn/1")
    np.testing.assert_array_equal(registered.predict(X), model.predict(X))


def test_pyfunc_matches_columns_by_name_and_takes_an_output_param(tracking, frame):
    X, y = frame
    model = mlserve.LogisticRegression().fit(X, y)
    with mlflow.start_run():
        info = mls_mlflow.log_model(model, name="model")
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_array_equal(pyfunc.predict(X[["visits", "tenure", "income", "age"]]),
                                  model.predict(X))
    np.testing.assert_array_equal(pyfunc.predict(X, params={"output": "proba"}),
                                  model.predict_proba(X))
    with pytest.raises(ValueError, match="unknown output 'probability'"):
        pyfunc.predict(X, params={"output": "probability"})


def test_signature_comes_from_feature_names_and_dtype(tmp_path, frame):
    X, _ = frame
    model = mlserve.KMeans(3, random_state=0).fit(X.astype(np.float32))   # float32 stays float32
    mls_mlflow.save_model(model, tmp_path / "m")
    signature = Model.load(str(tmp_path / "m" / "MLmodel")).signature
    inputs = signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == ["age", "income", "tenure", "visits"]
    assert {c["type"] for c in inputs} == {"float"}
    assert signature.params.to_dict()[0]["name"] == "output"


def test_model_without_names_has_a_tensor_signature(tmp_path, frame):
    X, y = frame
    model = mlserve.LogisticRegression().fit(X.to_numpy(), y)
    mls_mlflow.save_model(model, tmp_path / "m")
    spec = Model.load(str(tmp_path / "m" / "MLmodel")).signature.inputs.to_dict()[0]
    assert spec["type"] == "tensor" and tuple(spec["tensor-spec"]["shape"]) == (-1, 4)
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    np.testing.assert_array_equal(pyfunc.predict(X.to_numpy()), model.predict(X.to_numpy()))


def test_saved_folder_holds_the_mls_file_and_no_pickle(tmp_path, frame):
    X, y = frame
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y)
    model = mlserve.convert(forest)
    mls_mlflow.save_model(model, tmp_path / "m")
    files = sorted(os.listdir(tmp_path / "m"))
    assert "model.mls" in files and not [f for f in files if f.endswith((".pkl", ".pickle"))]
    flavors = Model.load(str(tmp_path / "m" / "MLmodel")).flavors
    assert flavors["python_function"]["loader_module"] == "mlserve.mlflow"
    assert flavors["mlserve"]["data"] == "model.mls"
    assert "mlserve==" in (tmp_path / "m" / "requirements.txt").read_text()
    loaded = mls_mlflow.load_model(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.predict_proba(X), forest.predict_proba(X), rtol=1e-12)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(X),
                                  forest.predict(X))


def test_mistakes_are_clear_errors(tmp_path, frame):
    X, y = frame
    with pytest.raises(TypeError, match="expects an mlserve model, got RandomForestClassifier"):
        mls_mlflow.save_model(RandomForestClassifier().fit(X, y), tmp_path / "a")
    model = mlserve.LogisticRegression().fit(X, y)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        mls_mlflow.save_model(model, tmp_path / "b")
    mls_mlflow.save_model(model, tmp_path / "c")
    mlmodel = tmp_path / "c" / "MLmodel"
    conf = Model.load(str(mlmodel))
    conf.flavors["mlserve"]["data"] = "../../etc/passwd"
    conf.save(str(mlmodel))
    with pytest.raises(ValueError, match="leaves the model folder"):
        mls_mlflow.load_model(str(tmp_path / "c"))
    sk_only = tmp_path / "d"
    mlflow.sklearn.save_model(RandomForestClassifier(n_estimators=2).fit(X, y), sk_only,
                              serialization_format="cloudpickle")
    with pytest.raises(ValueError, match="has no 'mlserve' flavor"):
        mls_mlflow.load_model(str(sk_only))


def test_metadata_and_flavor_fields(tmp_path, frame):
    X, _ = frame
    model = mlserve.KMeans(3, random_state=0).fit(X)
    mls_mlflow.save_model(model, tmp_path / "m", metadata={"team": "growth"})
    conf = Model.load(str(tmp_path / "m" / "MLmodel"))
    assert conf.metadata == {"team": "growth"}
    assert conf.flavors["mlserve"]["task"] == "clustering"
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    np.testing.assert_array_equal(pyfunc.predict(X), model.predict(X))
    np.testing.assert_allclose(pyfunc.predict(X, params={"output": "distances"}), model.transform(X))
