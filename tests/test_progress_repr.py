"""Issue 16 part 2: progress bars on long fits (progress=None|True|False), Ctrl-C
stopping a fit within a second (the estimator left unfitted, the process fine),
the C loop taking the GIL at most about ten times a second, scikit-learn style
repr, the HTML tables Jupyter shows, and the ModelStore listing.

The Ctrl-C tests send a real SIGINT to a subprocess running a real long fit;
the "person watching" test runs the fit under a real pseudo-terminal."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time

import numpy as np
import pytest

import mlserve
from mlserve import _core
from mlserve._progress import AUTO_DELAY, Reporter, is_watched

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _logistic_data(n=20000, d=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) + rng.normal(scale=2.0, size=n) > 0).astype(np.int64)
    return X, y


# ------------------------------------------------------------------ progress


def test_progress_true_draws_a_bar_and_false_draws_none(capsys):
    X, y = _logistic_data(n=500, d=5)
    mlserve.LogisticRegression(progress=True).fit(X, y)
    err = capsys.readouterr().err
    assert "LogisticRegression" in err and "it" in err  # tqdm's text bar on stderr
    mlserve.LogisticRegression(progress=False).fit(X, y)
    mlserve.LogisticRegression().fit(X, y)  # None: short, and nobody watches pytest's stderr
    assert capsys.readouterr().err == ""


def test_progress_none_shows_no_bar_when_nobody_watches(capsys):
    assert not is_watched()  # pytest captures stderr: not a terminal, not a kernel
    reporter = Reporter(None, 10, "x")
    reporter.start -= 5  # as if the work had run for 5 s
    reporter.update(3)
    reporter.close(10)
    assert reporter.bar is None and capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [1, 0, "yes", 2.5])
def test_progress_must_be_none_true_or_false(bad):
    X, y = _logistic_data(n=50, d=2)
    with pytest.raises(TypeError, match=f"progress must be None, True or False, got {bad!r}"):
        mlserve.LogisticRegression(progress=bad).fit(X, y)


def _run_in_pty(code: str, timeout: float = 60.0) -> str:
    """Run python -c code with stdin/stdout/stderr on a pseudo-terminal; its output."""
    leader, follower = pty.openpty()
    # a terminal of 24 x 100 characters (a fresh pty is 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower,
        cwd=ROOT, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


LONG_FIT = """
import time, numpy as np, mlserve
X = np.random.default_rng(0).normal(size=({rows}, 10))
t = time.monotonic()
mlserve.KMeans(30, n_init={n_init}, max_iter={max_iter}, tol=0.0, random_state=0).fit(X)
print("FIT_SECONDS", time.monotonic() - t)
"""


def test_progress_none_shows_a_bar_on_a_terminal_only_when_the_fit_runs_long():
    long_out = _run_in_pty(LONG_FIT.format(rows=60000, n_init=8, max_iter=300))
    seconds = float(long_out.split("FIT_SECONDS")[1].split()[0])
    assert seconds > 1.5, f"the long fit took only {seconds:.2f} s; make it longer"
    assert "KMeans:" in long_out and "it/s" in long_out, long_out  # the bar on the terminal
    short_out = _run_in_pty(LONG_FIT.format(rows=2000, n_init=1, max_iter=2))
    seconds = float(short_out.split("FIT_SECONDS")[1].split()[0])
    assert seconds < AUTO_DELAY, f"the short fit took {seconds:.2f} s"
    assert "KMeans:" not in short_out and "it/s" not in short_out, short_out


def test_the_c_fit_takes_the_gil_at_most_ten_times_a_second():
    X, y = _logistic_data(n=20000, d=40)
    calls = []
    t = time.monotonic()
    _, _, n_iter = _core.fit_logistic(
        X, y, 2, None, 1e6, True, 400, 0.0, lambda done, total: calls.append((done, total))
    )
    elapsed = time.monotonic() - t
    assert len(calls) <= 10 * elapsed + 1, (len(calls), elapsed)
    assert n_iter > 2 * len(calls)  # many iterations, few GIL takes
    assert all(total == 400 for _, total in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_kmeans_internal_reports_are_throttled_but_a_user_callable_sees_every_iteration():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20000, 8))
    calls = []
    t = time.monotonic()
    _, _, _, n_iter = _core.kmeans_fit(
        X, None, 30, None, 1, 300, 0.0, 7, 1, lambda *a: calls.append(a), 0.1
    )
    elapsed = time.monotonic() - t
    assert len(calls) <= 10 * elapsed + 1 and len(calls) < n_iter
    every = []
    _core.kmeans_fit(X, None, 30, None, 1, 300, 0.0, 7, 1, lambda *a: every.append(a), 0.0)
    assert [c[1] for c in every] == list(range(1, n_iter + 1))


def test_kmeans_and_als_progress_true_draw_bars(capsys):
    rng = np.random.default_rng(2)
    mlserve.KMeans(3, random_state=0, progress=True).fit(rng.normal(size=(300, 2)))
    assert "KMeans" in capsys.readouterr().err
    sp = pytest.importorskip("scipy.sparse")
    items = sp.random(50, 40, density=0.2, format="csr", random_state=0, dtype=np.float32)
    mlserve.ALS(factors=4, iterations=3, progress=True).fit_factors(items)
    assert "ALS" in capsys.readouterr().err
    mlserve.ALS(factors=4, iterations=3, progress=False).fit_factors(items)
    mlserve.KMeans(3, random_state=0, progress=False).fit(rng.normal(size=(300, 2)))
    assert capsys.readouterr().err == ""


def test_converting_an_ensemble_shows_a_bar_over_its_trees(capsys):
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 4))
    forest = RandomForestClassifier(n_estimators=37, max_depth=3, random_state=0)
    forest.fit(X, X[:, 0] > 0)
    converted = mlserve.convert(forest, progress=True)
    err = capsys.readouterr().err
    assert "convert" in err and "37/37" in err and "tree" in err, err
    np.testing.assert_array_equal(converted.predict(X), forest.predict(X))
    boosted = GradientBoostingRegressor(n_estimators=12, random_state=0).fit(X, X[:, 1])
    mlserve.convert(boosted, progress=True)
    assert "12/12" in capsys.readouterr().err
    import xgboost

    booster = xgboost.XGBRegressor(n_estimators=9, max_depth=2).fit(X, X[:, 2])
    mlserve.convert(booster, progress=True)
    assert "9/9" in capsys.readouterr().err
    mlserve.convert(forest, progress=False)
    mlserve.convert(forest)  # None: short, and nobody watches
    mlserve.convert(LinearRegression().fit(X, X[:, 0]), progress=True)  # nothing to count
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="progress must be None, True or False, got 'yes'"):
        mlserve.convert(forest, progress="yes")
    with pytest.raises(TypeError, match="progress must be None, True or False, got 2"):
        mlserve.convert(LinearRegression().fit(X, X[:, 0]), progress=2)


# ------------------------------------------------------------------- Ctrl-C

CTRL_C = """
import sys, time, numpy as np, mlserve
rng = np.random.default_rng(0)
{setup}
est = {make}
{fit_small}
assert {fitted}
print("READY", flush=True)
try:
    {fit_long}
    print("NOT INTERRUPTED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    {check_unfitted}
    {fit_small}
    assert {fitted}
    print("FINE", flush=True)
"""

CASES = {
    "LogisticRegression": {
        "setup": "X = rng.normal(size=(60000, 60)); y = (X[:, 0] + rng.normal(size=60000) > 0)",
        "make": "mlserve.LogisticRegression(max_iter=10**6, tol=0.0, C=1e6)",
        "fit_small": "est.set_params(max_iter=5).fit(X[:200], y[:200]); est.set_params(max_iter=10**6)",
        "fitted": "hasattr(est, 'coef_') and est.predict(X[:3]).shape == (3,)",
        "fit_long": "est.fit(X, y)",
        "check_unfitted": (
            "assert not hasattr(est, 'coef_') and not hasattr(est, 'classes_'), vars(est)\n"
            "    try:\n        est.predict(X[:1]); sys.exit('predicted')\n"
            "    except mlserve.NotFittedError:\n        pass"
        ),
    },
    "KMeans": {
        "setup": "X = rng.normal(size=(100000, 16))",
        "make": "mlserve.KMeans(40, n_init=10**6, max_iter=300, tol=0.0, random_state=0)",
        "fit_small": "est.set_params(n_init=1).fit(X[:500]); est.set_params(n_init=10**6)",
        "fitted": "hasattr(est, 'cluster_centers_') and est.predict(X[:3]).shape == (3,)",
        "fit_long": "est.fit(X)",
        "check_unfitted": (
            "assert not hasattr(est, 'cluster_centers_') and not hasattr(est, 'labels_')\n"
            "    try:\n        est.predict(X[:1]); sys.exit('predicted')\n"
            "    except mlserve.NotFittedError:\n        pass"
        ),
    },
    "ALS": {
        "setup": (
            "import scipy.sparse as sp\n"
            "rows, cols = rng.integers(0, 20000, 10**6), rng.integers(0, 5000, 10**6)\n"
            "R = sp.csr_matrix((np.ones(10**6, np.float32), (rows, cols)), (20000, 5000))\n"
            "result = None"
        ),
        "make": "mlserve.ALS(factors=16, iterations=10**6, num_threads=1, random_state=0)",
        "fit_small": "result = mlserve.ALS(factors=4, iterations=1).fit(R[:100])",
        "fitted": "result is not None and result.n_users == 100",
        "fit_long": "result = est.fit(R)",
        "check_unfitted": "assert result.n_users == 100  # nothing half-fit was returned",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ctrl_c_stops_a_long_fit_within_a_second(case):
    code = textwrap.dedent(CTRL_C).format(**CASES[case])
    with subprocess.Popen(
        [sys.executable, "-W", "ignore::UserWarning", "-c", code], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=ROOT, text=True,
    ) as proc:  # fmt: skip
        try:
            ready = proc.stdout.readline().strip()
            if ready == "READY":
                time.sleep(1.0)  # well inside the long fit
                running = proc.poll() is None
                sent = time.monotonic()
                proc.send_signal(signal.SIGINT)
                line = proc.stdout.readline().strip()
                latency = time.monotonic() - sent
            proc.wait(timeout=60)
            rest, err = proc.stdout.read(), proc.stderr.read()  # the readline's buffer is kept
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert ready == "READY" and running, err
    assert line == "INTERRUPTED", (line, err)
    assert latency < 1.0, f"{case}: the fit took {latency:.2f} s to stop"
    assert rest.strip() == "FINE" and proc.returncode == 0, (rest, err)


# --------------------------------------------------------------------- repr


def test_repr_shows_the_non_default_parameters():
    assert repr(mlserve.LogisticRegression()) == "LogisticRegression()"
    assert repr(mlserve.LogisticRegression(C=0.5, progress=True)) == (
        "LogisticRegression(C=0.5, progress=True)"
    )
    assert repr(mlserve.KMeans(3, tol=0.01)) == "KMeans(n_clusters=3, tol=0.01)"
    assert repr(mlserve.Ridge(alpha=2.0)) == "Ridge(alpha=2.0)"
    assert repr(mlserve.ALS(factors=8, iterations=3)) == "ALS(factors=8, iterations=3)"
    init = np.zeros((2, 2))  # an array parameter is never "equal to the default"
    assert repr(mlserve.KMeans(2, init=init)).startswith("KMeans(init=array([[0., 0.],")


def test_repr_html_of_a_fitted_classifier():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["age", "<income>", "tenure"])
    y = np.array(["no", "yes", "maybe"])[rng.integers(0, 3, 120)]
    est = mlserve.LogisticRegression(C=0.5).fit(X, y)
    page = est._repr_html_()
    size = est.coef_.nbytes + est.intercept_.nbytes
    for text in ("LogisticRegression", "logistic_regression", "classification",
                 "3: maybe, no, yes", f"{size:,} bytes", "float64", "C=0.5", "training rows",
                 ">120<", "age", "&lt;income&gt;", "tenure", "mean", "std", "min", "max",
                 f"{X['age'].mean():.4g}"):  # fmt: skip
        assert text in page, text
    assert "<income>" not in page  # escaped


def test_repr_html_of_unfitted_loaded_and_converted_models(tmp_path):
    assert "not fitted" in mlserve.LinearRegression()._repr_html_()
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 4))
    km = mlserve.KMeans(3, random_state=0).fit(X)
    mlserve.save(km, tmp_path / "km.mls")
    loaded = mlserve.load(tmp_path / "km.mls")
    page = loaded._repr_html_()
    assert "kmeans" in page and "inertia" in page and "x3" in page and "training rows" in page
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0)
    page = mlserve.convert(forest.fit(X, X[:, 0]))._repr_html_()
    assert "TreeEnsembleModel" in page and "regression" in page and " bytes" in page


def test_the_compiled_model_repr_names_its_kind_shape_and_mapping(tmp_path):
    rng = np.random.default_rng(7)
    est = mlserve.LinearRegression().fit(rng.normal(size=(30, 4)), rng.normal(size=30))
    assert repr(est.model_) == (
        "<mlserve.Model LinearRegression: kind='linear_regressor', n_features=4, "
        "dtype='float64'>"
    )
    mlserve.save(est, tmp_path / "lin.mls")
    loaded = mlserve.load(tmp_path / "lin.mls")
    assert repr(loaded.model_).endswith("dtype='float64', memory-mapped>")


# -------------------------------------------------------------------- store


def test_model_store_repr_and_html_list_models_versions_and_aliases(tmp_path):
    store = mlserve.ModelStore(tmp_path / "store")
    assert repr(store) == f"ModelStore({str(tmp_path / 'store')!r})  # empty"
    assert "no models" in store._repr_html_()
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(60, 2)), rng.integers(0, 2, 60)
    for seed in range(2):
        model = mlserve.LogisticRegression(C=1.0 + seed).fit(X, y)
        mlserve.save(model, tmp_path / f"m{seed}.mls")
        store.publish("churn", tmp_path / f"m{seed}.mls")
    store.publish("prices", tmp_path / "m0.mls", alias="production")
    store.set_alias("churn", "production", {1: 90, 2: 10})
    text = repr(store)
    assert text.splitlines() == [
        f"ModelStore({str(tmp_path / 'store')!r})",
        "  churn   versions 1, 2  aliases production -> 1 (90%), 2 (10%)",
        "  prices  versions 1  aliases production -> 1",
    ]
    page = store._repr_html_()
    for cell in ("<td>churn</td>", "<td>1, 2</td>", "<td>2</td>",
                 "production -&gt; 1 (90%), 2 (10%)", "<td>prices</td>"):  # fmt: skip
        assert cell in page, cell


def test_store_repr_survives_an_unreadable_manifest(tmp_path):
    store = mlserve.ModelStore(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert "broken" in repr(store) and "unreadable manifest" in repr(store)
    assert "unreadable manifest" in store._repr_html_()


# ---------------------------------------------------------------- dir(mlserve)


def test_all_is_sorted_and_dir_is_the_public_api():
    assert mlserve.__all__ == sorted(mlserve.__all__)
    public = [n for n in dir(mlserve) if not n.startswith("_")]
    assert set(public) - {"convert", "serving", "store", "cli", "client"} <= set(mlserve.__all__)
    for name in ("ModelStore", "blueprint", "MLServe", "Client", "LogisticRegression"):
        assert name in public
    for stray in ("annotations", "os", "np", "importlib", "_os"):
        assert stray not in public
