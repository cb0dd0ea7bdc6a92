"""The store refuses to point an alias at an incompatible version; metadata describes the alias.

Issue 12 part 2: publish with an alias, set_alias and canary splits compare the new
version's .mls metadata with what the alias serves (task, features, feature names and
their order, classes, input dtype and shape, outputs); a mismatch raises an
IncompatibleModelError naming the difference and nothing moves, force=True moves it
anyway. GET /models/<name> and the V1/V2 metadata without a version describe what the
default alias serves, not the newest file.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from flask import Flask

import mlserve
from mlserve._compatibility import compatibility_problems
from mlserve.cli import main
from mlserve.serving import blueprint
from mlserve.store import IncompatibleModelError, ModelStore, StoreError

N_ROWS = 120
SIX = ["f0", "f1", "f2", "f3", "f4", "f5"]


def features(n_features=6, names=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_ROWS, n_features))
    return pd.DataFrame(X, columns=names) if names else X


def labels(X, classes=("a", "b", "c")):
    values = np.asarray(X)[:, 0] + np.asarray(X)[:, 1]
    bins = np.quantile(values, np.linspace(0, 1, len(classes) + 1)[1:-1])
    return np.asarray(classes)[np.digitize(values, bins)]


def classifier(n_features=6, classes=("a", "b", "c"), names=None, seed=0):
    X = features(n_features, names, seed)
    return mlserve.LogisticRegression().fit(X, labels(X, classes))


def regressor(n_features=6, n_outputs=1, names=None, seed=0):
    X = features(n_features, names, seed)
    y = np.asarray(X)[:, :n_outputs] * 2.0 + 1.0
    return mlserve.LinearRegression().fit(X, y[:, 0] if n_outputs == 1 else y)


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "models")


@pytest.fixture
def churn(store):
    """churn: version 1 (not aliased), version 2 = production, a 6-feature 3-class classifier."""
    store.publish("churn", classifier(seed=1))
    store.publish("churn", classifier(seed=2), alias="production")
    return store


def snapshot(store, name):
    """The bytes of every file under the model's folder except the lock."""
    root = store.root / name
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ------------------------------------------------------------- the comparison


def test_compatible_models_have_no_problems():
    assert compatibility_problems(classifier(seed=1).metadata, classifier(seed=2).metadata) == []
    assert compatibility_problems(regressor(seed=1).metadata, regressor(seed=2).metadata) == []


def test_models_of_other_families_and_converters_are_compatible_when_their_interface_is():
    pytest.importorskip("xgboost")
    pytest.importorskip("lightgbm")
    import lightgbm
    import xgboost
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X = features(names=SIX)
    y = labels(X, (0, 1, 2))
    served = mlserve.LogisticRegression().fit(X, y).metadata
    for source in (
        RandomForestClassifier(n_estimators=3, random_state=0),
        HistGradientBoostingClassifier(max_iter=3),
        xgboost.XGBClassifier(n_estimators=3),
        lightgbm.LGBMClassifier(n_estimators=3, verbose=-1),
        LogisticRegression(max_iter=200),
    ):
        converted = mlserve.convert(source.fit(X, y)).metadata
        # a random forest stores one output per class, a logistic model one: both serve
        # labels and a probability per class, so that is no difference
        assert compatibility_problems(served, converted) == [], type(source).__name__
    other = mlserve.convert(RandomForestClassifier(n_estimators=3).fit(X, labels(X, (0, 1))))
    assert compatibility_problems(served, other.metadata) == [
        "the new version classes [0, 1] differ from the alias's [0, 1, 2]"
    ]


@pytest.mark.parametrize(
    ("served", "candidate", "problem"),
    [
        (
            lambda: classifier(),
            lambda: classifier(n_features=5),
            "version 3 has 5 features, production serves 6 (version 2)",
        ),
        (
            lambda: classifier(),
            lambda: classifier(classes=("a", "b")),
            "version 3 classes ['a', 'b'] differ from production's ['a', 'b', 'c'] (version 2)",
        ),
        (
            lambda: classifier(),
            lambda: regressor(),
            "version 3 is a regression model, production serves a classification model"
            " (version 2)",
        ),
        (
            lambda: regressor(),
            lambda: regressor(n_outputs=2),
            "version 3 predicts 2 values per row, production serves 1 value (version 2)",
        ),
        (
            lambda: classifier(names=SIX),
            lambda: classifier(names=["f0", "f1", "f2", "f3", "f5", "f4"]),
            "version 3 has the feature names of production (version 2) in another order (from"
            " column 4: ['f5', 'f4'] instead of ['f4', 'f5']); clients that send rows by"
            " position (NumPy arrays, lists) would feed the wrong features",
        ),
        (
            lambda: classifier(names=SIX),
            lambda: classifier(names=["f0", "f1", "f2", "f3", "f4", "age"]),
            "version 3 feature names ['f0', 'f1', 'f2', 'f3', 'f4', 'age'] differ from"
            " production's ['f0', 'f1', 'f2', 'f3', 'f4', 'f5'] (version 2) (without ['f5'],"
            " with ['age'] instead)",
        ),
        (
            lambda: classifier(names=SIX),
            lambda: classifier(),
            "version 3 has no feature names, production serves feature names ['f0', 'f1', 'f2',"
            " 'f3', 'f4', 'f5'] (version 2) (clients that send columns by name would be refused)",
        ),
        (
            lambda: classifier(classes=(0, 1)),
            lambda: classifier(classes=(0.0, 1.0)),
            "version 3 class labels are floats, production's are integers (version 2)",
        ),
    ],
    ids=["n_features", "classes", "task", "outputs", "order", "names", "no-names", "label-type"],
)
def test_each_difference_is_named(served, candidate, problem):
    problems = compatibility_problems(
        served().metadata,
        candidate().metadata,
        candidate_label="version 3",
        served_label="production",
        served_version=2,
    )
    assert problems == [problem]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"dtype": "float32"}, "the new version takes float32 input, the alias serves float64"),
        (
            {"classes": ["c", "b", "a"]},
            "the new version classes ['c', 'b', 'a'] are the alias's ['a', 'b', 'c'] in another"
            " order (predict_proba's columns would change meaning)",
        ),
        (
            {"input_shape": [6, 1]},
            "the new version takes input of shape [6, 1], the alias serves None",
        ),
    ],
)
def test_differences_of_metadata_no_estimator_produces_yet(change, problem):
    # every model today takes float64 rows with classes in sorted order; the comparison
    # still reads these fields, for the converters and families that will set them
    served = dict(classifier().metadata)
    assert compatibility_problems(served, {**served, **change}) == [problem]


def test_long_name_lists_are_shortened():
    names = [f"column_{i}" for i in range(50)]
    served = {"task": "regression", "n_features": 50, "feature_names": names}
    other = {**served, "feature_names": names[:49] + ["extra"]}
    (problem,) = compatibility_problems(served, other)
    assert "'column_7', ...] (50 in all)" in problem
    assert problem.endswith("(without ['column_49'], with ['extra'] instead)")
    assert len(problem) < 600


# ------------------------------------------------------------- publish


def test_publish_over_an_alias_refuses_an_incompatible_model_and_creates_nothing(churn):
    before = snapshot(churn, "churn")
    with pytest.raises(IncompatibleModelError) as raised:
        churn.publish("churn", classifier(n_features=5), alias="production")
    assert str(raised.value) == (
        "refused to publish model 'churn' as 'production': version 3 has 5 features,"
        " production serves 6 (version 2). Nothing was published and 'production' still"
        " points to version 2 (force=True or --force publishes it anyway)"
    )
    assert raised.value.problems == ["version 3 has 5 features, production serves 6 (version 2)"]
    assert isinstance(raised.value, StoreError)
    assert snapshot(churn, "churn") == before  # no version folder, no staging, same manifest
    assert sorted(os.listdir(churn.root / "churn")) == [".lock", "1", "2", "manifest.json"]
    # the refused publish did not use up version 3
    assert churn.publish("churn", classifier(seed=3), alias="production") == 3


def test_publish_reports_every_difference(churn):
    with pytest.raises(IncompatibleModelError) as raised:
        churn.publish("churn", classifier(n_features=5, classes=("a", "b")), alias="production")
    assert raised.value.problems == [
        "version 3 has 5 features, production serves 6 (version 2)",
        "version 3 classes ['a', 'b'] differ from production's ['a', 'b', 'c'] (version 2)",
    ]


def test_publish_with_force_moves_the_alias(churn):
    assert churn.publish("churn", regressor(), alias="production", force=True) == 3
    assert churn.resolve("churn") == 3
    assert churn.rollback("churn", "production")[0].version == 2


def test_publish_without_an_alias_or_to_a_new_alias_is_always_allowed(churn):
    assert churn.publish("churn", regressor(n_features=2)) == 3
    assert churn.publish("churn", regressor(n_features=3), alias="experiment") == 4
    assert churn.resolve("churn") == 2


def test_a_compatible_publish_moves_the_alias(churn):
    assert churn.publish("churn", classifier(seed=9), alias="production") == 3
    assert churn.resolve("churn", alias="production") == 3


def test_a_file_is_checked_like_an_estimator(churn, tmp_path):
    path = tmp_path / "five.mls"
    mlserve.save(classifier(n_features=5), path)
    with pytest.raises(IncompatibleModelError, match="version 3 has 5 features"):
        churn.publish("churn", path, alias="production")
    assert churn.versions("churn") == [1, 2]


# ------------------------------------------------------------- set_alias, splits, rollback


def test_set_alias_refuses_an_incompatible_version_and_nothing_moves(churn):
    churn.publish("churn", classifier(classes=("a", "b")))  # version 3, no alias
    manifest = (churn.root / "churn" / "manifest.json").read_bytes()
    with pytest.raises(IncompatibleModelError) as raised:
        churn.set_alias("churn", "production", 3)
    assert str(raised.value) == (
        "refused to point 'production' of model 'churn' at version 3: version 3 classes"
        " ['a', 'b'] differ from production's ['a', 'b', 'c'] (version 2). 'production' still"
        " points to version 2 (force=True or --force moves it anyway)"
    )
    assert (churn.root / "churn" / "manifest.json").read_bytes() == manifest
    assert [t.version for t in churn.set_alias("churn", "production", 3, force=True)] == [3]
    assert churn.resolve("churn") == 3


def test_set_alias_to_a_compatible_version(churn):
    churn.set_alias("churn", "production", 1)
    assert churn.resolve("churn") == 1


def test_a_split_across_incompatible_versions_is_refused(churn):
    churn.publish("churn", classifier(n_features=5))  # version 3
    with pytest.raises(IncompatibleModelError) as raised:
        churn.set_alias("churn", "production", {2: 90, 3: 10})
    assert raised.value.problems == ["version 3 has 5 features, production serves 6 (version 2)"]
    assert "at versions 2 (90%), 3 (10%)" in str(raised.value)
    # a new alias: the versions of the split against each other
    with pytest.raises(IncompatibleModelError) as raised:
        churn.set_alias("churn", "canary", {1: 50, 3: 50})
    assert raised.value.problems == [
        "version 3 has 5 features, the same split of canary serves 6 (version 1)"
    ]
    assert "'canary' was not created" in str(raised.value)
    assert "canary" not in churn.aliases("churn")
    assert churn.aliases("churn")["production"][0].version == 2
    churn.set_alias("churn", "canary", {1: 50, 3: 50}, force=True)
    assert {t.version for t in churn.aliases("churn")["canary"]} == {1, 3}


def test_a_split_of_compatible_versions_is_allowed(churn):
    churn.publish("churn", classifier(seed=5))  # version 3
    targets = churn.set_alias("churn", "production", {2: 90, 3: 10})
    assert [(t.version, t.weight) for t in targets] == [(2, 90.0), (3, 10.0)]


def test_a_split_against_what_the_alias_served_before(churn):
    # versions 3 and 4 agree with each other, not with production's version 2
    churn.publish("churn", regressor())
    churn.publish("churn", regressor(seed=4))
    with pytest.raises(IncompatibleModelError) as raised:
        churn.set_alias("churn", "production", {3: 90, 4: 10})
    assert raised.value.problems == [
        "version 3 is a regression model, production serves a classification model (version 2)",
        "version 4 is a regression model, production serves a classification model (version 2)",
    ]


def test_rollback_is_never_refused(churn):
    # rollback restores what the alias served before: the way back from a forced move
    churn.publish("churn", regressor(), alias="production", force=True)  # version 3
    churn.set_alias("churn", "production", 2, force=True)
    assert churn.rollback("churn", "production")[0].version == 3
    assert churn.rollback("churn", "production")[0].version == 2


def test_the_check_reads_the_manifest_not_the_model_files(churn):
    # the served version's file is unreadable: the check still knows what it serves
    (churn.root / "churn" / "2" / "model.mls").write_bytes(b"not a model")
    with pytest.raises(IncompatibleModelError, match="version 3 has 5 features"):
        churn.publish("churn", classifier(n_features=5), alias="production")


# ------------------------------------------------------------- metadata over HTTP


@pytest.fixture
def served_v2_newest_v3(store):
    """production -> version 2 (6 features, 3 classes); version 3 (4 features) is the newest."""
    store.publish("churn", classifier(seed=1))
    store.publish("churn", classifier(seed=2, names=SIX), alias="production")
    store.publish("churn", regressor(n_features=4))
    return store


def client_of(store, **config):
    app = Flask("host")
    app.config.update(config)
    app.register_blueprint(blueprint(store, reload_interval=0), url_prefix="/ml")
    return app.test_client()


def test_get_model_describes_what_the_default_alias_serves(served_v2_newest_v3):
    described = client_of(served_v2_newest_v3).get("/ml/models/churn").json
    assert described["version"] == 2
    assert described["latest_version"] == 3
    assert described["serving"] == {
        "alias": "production",
        "versions": [{"version": 2, "weight": 100}],
    }
    assert described["n_features"] == 6 and described["input_shape"] == [-1, 6]
    assert described["classes"] == ["a", "b", "c"]
    assert described["feature_names"] == SIX
    assert described["task"] == "classification"
    assert described["versions"] == [1, 2, 3]
    listing = client_of(served_v2_newest_v3).get("/ml/models").json["models"]
    assert listing[0]["version"] == 2 and listing[0]["latest_version"] == 3


def test_v1_and_v2_metadata_without_a_version_describe_the_default_alias(served_v2_newest_v3):
    client = client_of(served_v2_newest_v3)
    status = client.get("/ml/v1/models/churn").json
    assert [s["version"] for s in status["model_version_status"]] == ["2"]
    v1 = client.get("/ml/v1/models/churn/metadata").json
    assert v1["model_spec"] == {"name": "churn", "version": "2"}
    assert v1["metadata"]["signature_def"]["inputs"]["input"]["shape"] == [-1, 6]
    assert v1["metadata"]["mlserve"] == {
        "latest_version": "3",
        "serving": {"alias": "production", "versions": ["2"]},
    }
    v2 = client.get("/ml/v2/models/churn").json
    assert v2["inputs"][0]["shape"] == [-1, 6]
    assert v2["inputs"][0]["parameters"] == {"feature_names": SIX}
    assert v2["outputs"][0]["parameters"] == {"classes": ["a", "b", "c"]}
    assert v2["parameters"]["version"] == "2"
    assert v2["parameters"]["latest_version"] == "3"
    assert v2["parameters"]["serving_alias"] == "production"
    assert v2["versions"] == ["1", "2", "3"]
    # a version named explicitly is still described as asked
    assert client.get("/ml/v2/models/churn/versions/3").json["inputs"][0]["shape"] == [-1, 4]


def test_metadata_of_a_split_describes_its_heaviest_version_every_time(store):
    store.publish("churn", classifier(seed=1), alias="production")
    store.publish("churn", classifier(seed=2))
    store.set_alias("churn", "production", {1: 10, 2: 90})
    client = client_of(store)
    for _ in range(20):  # no coin toss per request
        assert client.get("/ml/v2/models/churn").json["parameters"]["version"] == "2"
        assert client.get("/ml/v1/models/churn/metadata").json["model_spec"]["version"] == "2"
    described = client.get("/ml/models/churn").json
    assert described["version"] == 2
    assert described["serving"]["versions"] == [
        {"version": 1, "weight": 10},
        {"version": 2, "weight": 90},
    ]
    status = client.get("/ml/v1/models/churn").json
    assert [s["version"] for s in status["model_version_status"]] == ["2", "1"]


def test_metadata_follows_mlserve_default_alias_and_falls_back_to_the_newest(
    served_v2_newest_v3,
):
    served_v2_newest_v3.set_alias("churn", "stable", 1)
    client = client_of(served_v2_newest_v3, MLSERVE_DEFAULT_ALIAS="stable")
    described = client.get("/ml/models/churn").json
    assert described["version"] == 1 and described["serving"]["alias"] == "stable"
    client = client_of(served_v2_newest_v3, MLSERVE_DEFAULT_ALIAS="nope")
    described = client.get("/ml/models/churn").json
    assert described["version"] == 3 and described["n_features"] == 4
    assert described["serving"] == {"alias": "latest", "versions": [{"version": 3, "weight": 100}]}
    assert client.get("/ml/v2/models/churn").json["parameters"]["serving_alias"] == "latest"


# ------------------------------------------------------------- CLIs


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_mlserve_publish_and_alias_refuse_and_force(churn, tmp_path):
    store_dir = churn.root
    five = tmp_path / "five.mls"
    mlserve.save(classifier(n_features=5), five)
    result = invoke("publish", five, "--name", "churn", "--alias", "production", "--store",
                    store_dir)  # fmt: skip
    assert result.exit_code == 1
    assert "version 3 has 5 features, production serves 6 (version 2)" in result.output
    assert churn.versions("churn") == [1, 2]
    assert invoke("publish", five, "-n", "churn", "--store", store_dir).output == (
        "published churn version 3\n"
    )
    result = invoke("alias", "churn", "production", "2=90,3=10", "--store", store_dir)
    assert result.exit_code == 1
    assert "refused to point 'production' of model 'churn' at versions 2 (90%), 3 (10%)" in (
        result.output
    )
    assert churn.aliases("churn")["production"][0].version == 2
    result = invoke("alias", "churn", "production", "2=90,3=10", "--force", "--store", store_dir)
    assert result.exit_code == 0 and result.output == "churn: production -> v2 (90%), v3 (10%)\n"
    result = invoke("publish", five, "-n", "churn", "-a", "production", "--force", "--store",
                    store_dir)  # fmt: skip
    assert result.output == "published churn version 4 as production\n"


def test_flask_mlserve_publish_and_alias_refuse_and_force(churn, tmp_path):
    app = Flask("host")
    app.register_blueprint(blueprint(churn, reload_interval=0), url_prefix="/ml")
    runner = app.test_cli_runner()
    five = tmp_path / "five.mls"
    mlserve.save(classifier(n_features=5), five)
    result = runner.invoke(args=["mlserve", "publish", str(five), "-n", "churn", "-a",
                                 "production"])  # fmt: skip
    assert result.exit_code == 1
    assert "version 3 has 5 features, production serves 6 (version 2)" in result.output
    assert churn.versions("churn") == [1, 2]
    result = runner.invoke(args=["mlserve", "publish", str(five), "-n", "churn"])
    assert result.output == "published churn version 3\n"
    result = runner.invoke(args=["mlserve", "alias", "churn", "production", "3"])
    assert result.exit_code == 1 and "version 3 has 5 features" in result.output
    result = runner.invoke(args=["mlserve", "alias", "churn", "production", "3", "--force"])
    assert result.exit_code == 0 and result.output == "churn: production -> v3\n"


# ------------------------------------------------------------- layering


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_commands_do_not_import_the_blueprint():
    # DESIGN.md: arrows point down; the state both need lives in serving/registry.py
    serving = Path(mlserve.__file__).parent / "serving"
    assert "mlserve.serving.blueprint" not in imported_modules(serving / "commands.py")
    assert "mlserve.serving.blueprint" not in imported_modules(serving / "registry.py")
    assert "mlserve.serving.commands" not in imported_modules(serving / "registry.py")


def test_describe_is_json_ready(served_v2_newest_v3):
    json.dumps(served_v2_newest_v3.describe("churn"))


def test_a_version_given_twice_in_a_split_is_refused(churn):
    result = invoke("alias", "churn", "production", "2=50,2=50", "--store", churn.root)
    assert result.exit_code == 2 and "version 2 appears twice in '2=50,2=50'" in result.output


def test_serving_state_of_an_unknown_blueprint_names_the_registered_ones(store):
    from mlserve.serving import serving_state

    app = Flask("host")
    app.register_blueprint(blueprint(store, reload_interval=0), url_prefix="/ml")
    with pytest.raises(RuntimeError, match="no mlserve blueprint named 'other'.*registered: mlserve"):
        serving_state(app, name="other")


def test_mlserve_models_shows_what_production_serves(served_v2_newest_v3):
    result = invoke("models", served_v2_newest_v3.root)
    assert result.output.startswith(
        "churn  versions: 1, 2, 3  aliases: production -> v2  input: [-1, 6]  task: classification"
    )
    app = Flask("host")
    app.config["MLSERVE_DEFAULT_ALIAS"] = "none-such"
    app.register_blueprint(blueprint(served_v2_newest_v3, reload_interval=0), url_prefix="/ml")
    result = app.test_cli_runner().invoke(args=["mlserve", "models"])
    assert "input: [-1, 4]  task: regression" in result.output  # no such alias: the newest
