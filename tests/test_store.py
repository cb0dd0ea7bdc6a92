"""ModelStore: versions, aliases, rollback, delete, canary weights, atomicity, locking."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import numpy as np
import pytest

import mlserve
from mlserve.store import (
    AliasTarget,
    ModelNotFoundError,
    ModelStore,
    StoreError,
    VersionInUseError,
)
from serving_support import fit_classifier, fit_regressor, training_data


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "models")


@pytest.fixture(scope="module")
def regressor():
    return fit_regressor()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, regressor):
    path = tmp_path_factory.mktemp("files") / "reg.mls"
    mlserve.save(regressor, path)
    return path


def test_publish_assigns_increasing_versions(store, regressor, model_file):
    assert store.publish("reg", model_file) == 1
    assert store.publish("reg", regressor) == 2
    assert store.versions("reg") == [1, 2]
    assert store.names() == ["reg"]
    assert (store.root / "reg" / "2" / "model.mls").is_file()


def test_get_by_version_alias_and_latest(store, regressor, model_file):
    store.publish("reg", model_file, alias="production")
    store.publish("reg", regressor, alias="staging")
    X, _ = training_data()
    np.testing.assert_allclose(store.get("reg", version=1).predict(X[:5]), regressor.predict(X[:5]))
    assert store.resolve("reg", alias="production") == 1
    assert store.resolve("reg", alias="staging") == 2
    assert store.resolve("reg", version="latest") == 2
    assert store.resolve("reg") == 1  # the default alias "production" wins over latest
    assert store.resolve("reg", default_alias=None) == 2
    assert store.resolve("reg", version="2", alias="production") == 2  # version wins


def test_unknown_model_version_alias_raise_not_found(store, regressor):
    with pytest.raises(ModelNotFoundError, match="model 'nope' not found in the store"):
        store.resolve("nope")
    store.publish("reg", regressor)
    with pytest.raises(ModelNotFoundError, match="model 'reg' has no version 7"):
        store.resolve("reg", version=7)
    with pytest.raises(ModelNotFoundError, match="model 'reg' has no alias 'canary'"):
        store.resolve("reg", alias="canary")
    with pytest.raises(ModelNotFoundError, match="expected a number"):
        store.resolve("reg", version="x1")


def test_alias_move_and_rollback(store, regressor):
    for _ in range(3):
        store.publish("reg", regressor)
    store.set_alias("reg", "production", 1)
    store.set_alias("reg", "production", 2)
    store.set_alias("reg", "production", 3)
    assert store.aliases("reg") == {"production": [AliasTarget(3)]}
    assert store.rollback("reg", "production") == [AliasTarget(2)]
    assert store.rollback("reg", "production") == [AliasTarget(1)]
    with pytest.raises(StoreError, match="no previous version to roll back to"):
        store.rollback("reg", "production")
    assert store.resolve("reg", alias="production") == 1


def test_publish_with_alias_records_history(store, regressor):
    store.publish("reg", regressor, alias="production")
    store.publish("reg", regressor, alias="production")
    assert store.resolve("reg") == 2
    store.rollback("reg", "production")
    assert store.resolve("reg") == 1


def test_delete_refuses_aliased_version(store, regressor):
    store.publish("reg", regressor, alias="production")
    store.publish("reg", regressor)
    with pytest.raises(VersionInUseError, match="alias 'production' points to it"):
        store.delete("reg", 1)
    store.delete("reg", 2)
    assert store.versions("reg") == [1]
    assert not (store.root / "reg" / "2").exists()
    # numbers are never reused
    assert store.publish("reg", regressor) == 3


def test_delete_drops_version_from_alias_history(store, regressor):
    store.publish("reg", regressor, alias="production")
    store.publish("reg", regressor, alias="production")
    store.set_alias("reg", "production", 2)
    store.set_alias("reg", "staging", 2)
    store.remove_alias("reg", "staging")
    manifest = store.manifest("reg")
    assert manifest.alias_history["production"] == ((AliasTarget(1),),)
    store.delete("reg", 1)
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("reg", "production")


def test_canary_split_follows_weights(store, regressor):
    store.publish("reg", regressor)
    store.publish("reg", regressor)
    targets = store.set_alias("reg", "production", {1: 90, 2: 10})
    assert targets == [AliasTarget(1, 90.0), AliasTarget(2, 10.0)]
    counts = Counter(store.resolve("reg") for _ in range(4000))
    assert set(counts) == {1, 2}
    assert 0.85 < counts[1] / 4000 < 0.95


def test_sticky_canary_split_is_stable_per_key_and_follows_weights(store, regressor):
    store.publish("reg", regressor)
    store.publish("reg", regressor)
    store.set_alias("reg", "production", {1: 90, 2: 10})
    users = [f"user-{i}" for i in range(10_000)]
    picks = [store.resolve("reg", sticky_key=user) for user in users]
    counts = Counter(picks)
    assert abs(counts[1] / len(users) - 0.90) < 0.02
    assert abs(counts[2] / len(users) - 0.10) < 0.02
    # the same key gets the same version every time, from a fresh store object too
    again = ModelStore(store.root)
    assert [again.resolve("reg", sticky_key=user) for user in users[:500]] == picks[:500]
    assert {store.resolve("reg", sticky_key="user-7") for _ in range(50)} == {picks[7]}
    # another process (another hash seed) makes the same picks
    script = (
        "import sys; from mlserve.store import ModelStore; s = ModelStore(sys.argv[1]); "
        "print(','.join(str(s.resolve('reg', sticky_key=f'user-{i}')) for i in range(200)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(store.root)], capture_output=True, text=True,
        check=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()  # fmt: skip
    assert out == ",".join(str(p) for p in picks[:200])
    # without a key the pick stays random
    assert set(Counter(store.resolve("reg") for _ in range(400))) == {1, 2}


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ({}, "at least one version"),
        ({1: 0}, "weight of version 1 must be a positive number"),
        ({1: float("nan")}, "must be a positive number"),
        ("x", "invalid version 'x'"),
        (0, "invalid version 0"),
        (True, "invalid version True"),
        ({1: "abc"}, "weight of version 1 must be a positive number, got 'abc'"),
        ({1: None}, "weight of version 1 must be a positive number, got None"),
        ({1: True}, "weight of version 1 must be a positive number, got True"),
    ],
)
def test_set_alias_rejects_bad_targets(store, regressor, versions, message):
    store.publish("reg", regressor)
    with pytest.raises(StoreError, match=message):
        store.set_alias("reg", "production", versions)


def test_publish_of_a_missing_file_says_what_it_expected(store, tmp_path):
    with pytest.raises(StoreError, match=r"no such file \(expected a .mls file or a fitted"):
        store.publish("reg", tmp_path / "missing.mls")


def test_set_alias_to_missing_version(store, regressor):
    store.publish("reg", regressor)
    with pytest.raises(ModelNotFoundError, match="has no version 5"):
        store.set_alias("reg", "production", 5)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 200, "a b", 3])
def test_invalid_model_names(store, regressor, name):
    with pytest.raises(StoreError, match="invalid model name"):
        store.publish(name, regressor)


@pytest.mark.parametrize(
    ("alias", "message"),
    [("12", "cannot be a number"), ("latest", "newest"), ("a/b", "invalid alias")],
)
def test_invalid_aliases(store, regressor, alias, message):
    store.publish("reg", regressor)
    with pytest.raises(StoreError, match=message):
        store.set_alias("reg", alias, 1)


def test_publish_refuses_a_bad_file_and_leaves_the_store_unchanged(store, regressor, tmp_path):
    store.publish("reg", regressor, alias="production")
    bad = tmp_path / "bad.mls"
    bad.write_bytes(b"not a model at all" * 10)
    with pytest.raises(mlserve.ModelFormatError) as raised:
        store.publish("reg", bad, alias="production")
    # the message names the user's file, not the store's staging copy
    assert str(raised.value) == f"cannot publish {str(bad)!r}: not an .mls file (bad magic)"
    with pytest.raises(StoreError, match="no such file"):
        store.publish("reg", tmp_path / "missing.mls")
    assert store.versions("reg") == [1]
    assert store.resolve("reg") == 1
    assert sorted(p.name for p in (store.root / "reg").iterdir()) == [".lock", "1", "manifest.json"]


def test_orphan_version_directory_is_ignored_and_its_number_skipped(store, regressor):
    store.publish("reg", regressor)
    (store.root / "reg" / "2").mkdir()  # a publish killed between its two renames
    assert store.versions("reg") == [1]
    assert store.publish("reg", regressor) == 3
    assert not (store.root / "reg" / "2").exists()  # cleaned up under the lock
    stale = store.root / "reg" / ".staging-dead"
    stale.mkdir()
    os.utime(stale, (0, 0))
    store.publish("reg", regressor)
    assert not stale.exists()


def test_loaded_models_are_cached_and_memory_mapped(store, regressor):
    store.publish("reg", regressor)
    first = store.get("reg")
    assert store.get("reg", version=1) is first
    store.forget("reg", 1)
    assert store.get("reg") is not first


def test_describe(store):
    store.publish("clf", fit_classifier(), alias="production")
    described = store.describe("clf")
    assert described["versions"] == [1]
    assert described["latest_version"] == 1
    assert described["aliases"] == {"production": [{"version": 1, "weight": 1.0}]}
    assert described["input_shape"] == [-1, 4]
    assert described["classes"] == ["high", "low"]
    assert described["task"] == "classification"


def test_manifest_of_a_newer_format_is_refused(store, regressor):
    store.publish("reg", regressor)
    path = store.root / "reg" / "manifest.json"
    data = json.loads(path.read_text())
    data["format"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError, match="format 99"):
        store.manifest("reg")


def test_concurrent_publishers_in_threads_get_unique_versions(store, regressor):
    versions: list[int] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            for _ in range(4):
                versions.append(store.publish("reg", regressor, alias="production"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(versions) == list(range(1, 13))
    assert store.versions("reg") == list(range(1, 13))


_PUBLISHER = textwrap.dedent(
    """
    import sys
    import mlserve
    from mlserve.store import ModelStore

    store = ModelStore(sys.argv[1])
    model = mlserve.load(sys.argv[2])
    count = int(sys.argv[3])
    print("ready", flush=True)
    for i in range(count):
        version = store.publish("reg", model, alias="production")
        store.set_alias("reg", "staging", version)
    """
)


def test_two_processes_publishing_never_corrupt_the_manifest(store, model_file):
    commands = [
        [sys.executable, "-c", _PUBLISHER, str(store.root), str(model_file), "4"] for _ in range(2)
    ]
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in commands]
    for p in processes:
        assert p.wait(timeout=60) == 0
    assert store.versions("reg") == list(range(1, 9))
    assert store.resolve("reg", alias="staging") in range(1, 9)


def _assert_consistent(store: ModelStore) -> None:
    for name in store.names():
        manifest = store.manifest(name)
        for version in manifest.versions:
            mlserve.load(store.path(name, version), verify=True)
        for targets in manifest.aliases.values():
            assert all(t.version in manifest.versions for t in targets)
        for history in manifest.alias_history.values():
            for targets in history:
                assert all(t.version in manifest.versions for t in targets)


def test_kill_9_during_publish_leaves_the_store_consistent(store, model_file):
    seed = random.randrange(1 << 30)
    print(f"kill test seed: {seed}")
    chooser = random.Random(seed)
    for _trial in range(6):
        process = subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, str(store.root), str(model_file), "1000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        try:
            process.wait(timeout=chooser.uniform(0.0, 0.25))
        except subprocess.TimeoutExpired:
            pass
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        _assert_consistent(store)
        before = store.versions("reg") if "reg" in store.names() else []
        # the lock died with the process: the next publish goes through
        after = store.publish("reg", model_file, alias="production")
        assert after > max(before, default=0)
        assert store.resolve("reg") == after
