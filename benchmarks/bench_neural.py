"""Neural networks: mlserve's C graph vs onnxruntime vs scikit-learn, 1 thread, one run.

    python benchmarks/bench_neural.py           # ~10 s

Cases (issue 13, steps 1 and 2):

* scikit-learn MLPClassifier (20 features, hidden (100,), 3 classes), predict_proba
  of one row: mlserve.convert(mlp) vs sklearn vs onnxruntime on the same weights
  as an ONNX graph (Gemm/Relu/Gemm/Softmax);
* an ONNX MLP 784 -> 256 -> 128 -> 10 (Gemm+Relu, Softmax) at batch 1 and 64:
  mlserve.from_onnx vs onnxruntime;
* the articles' small CNN (28x28x1, two Conv-BN-Relu-MaxPool blocks, dense head;
  tests/graph_support.small_cnn) at batch 1 and 64;
* the onnx package's light zoo (random weights, tests/graph_support.fill_light) at
  batch 1: ResNet-50, Inception v2, SqueezeNet, plus ShuffleNet, Inception v1 and
  DenseNet-121 (``--all`` adds AlexNet, VGG-19, ZFNet-512: minutes);
* load time (mlserve.from_onnx and mlserve.load of the saved .mls vs building an
  onnxruntime session) and resident memory after load + one predict, each in a
  fresh process.

    python benchmarks/bench_neural.py --all     # every zoo model

Contenders are sampled in rotation (benchmarks/_common.measure_interleaved);
ratios are of median times: "ort / mlserve" = 2.0x means mlserve is twice as fast.
"""
from __future__ import annotations

import itertools
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

import mlserve


def _onnx_mlp(weights, biases, acts):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, cur = [], [], "x"
    for i, (w, b) in enumerate(zip(weights, biases)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [f"h{i}"], name=f"gemm{i}"))
        cur = f"h{i}"
        act = acts[i]
        nodes.append(helper.make_node(act, [cur], [f"a{i}"], name=f"{act}{i}"))
        cur = f"a{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", weights[0].shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weights[-1].shape[1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def main() -> None:
    from sklearn.datasets import make_classification
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlserve.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    rows, results = [], {}

    X, y = make_classification(2000, 20, n_informative=10, n_classes=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((100,), max_iter=50, random_state=0).fit(X, y)
    net = mlserve.convert(mlp)
    sess = _session(_onnx_mlp(mlp.coefs_, mlp.intercepts_, ["Relu", "Softmax"]))
    row = X[:1].astype(np.float32)
    row64 = X[:1]
    assert np.abs(net.predict_proba(row) - mlp.predict_proba(row64)).max() < 1e-5
    ns = {"net": net, "mlp": mlp, "sess": sess, "row": row, "row64": row64}
    m = C.measure_interleaved({
        "mlserve": "net.predict_proba(row)",
        "sklearn": "mlp.predict_proba(row64)",
        "onnxruntime": "sess.run(None, {'x': row})",
    }, ns, budget_s=0.6)
    results["mlp1"] = m
    rows.append(["sklearn MLP (100,), 1 row", C.fmt_time(m["mlserve"].median_ns),
                 C.fmt_time(m["sklearn"].median_ns), C.fmt_time(m["onnxruntime"].median_ns),
                 C.fmt_ratio(m["sklearn"].median_ns / m["mlserve"].median_ns),
                 C.fmt_ratio(m["onnxruntime"].median_ns / m["mlserve"].median_ns)])

    rng = np.random.default_rng(0)
    dims = [784, 256, 128, 10]
    ws = [rng.normal(size=(a, b)).astype(np.float32) / np.sqrt(a) for a, b in itertools.pairwise(dims)]
    bs = [rng.normal(size=b).astype(np.float32) * 0.1 for b in dims[1:]]
    model = _onnx_mlp(ws, bs, ["Relu", "Relu", "Softmax"])
    onet, osess = mlserve.from_onnx(model), _session(model)
    for batch in (1, 64):
        x = rng.normal(size=(batch, 784)).astype(np.float32)
        ref = osess.run(None, {"x": x})[0]
        assert np.abs(onet.predict(x) - ref).max() <= 1e-4 * np.abs(ref).max()
        m = C.measure_interleaved({
            "mlserve": "onet.predict(x)",
            "onnxruntime": "osess.run(None, {'x': x})",
        }, {"onet": onet, "osess": osess, "x": x}, budget_s=0.6)
        rows.append([f"ONNX MLP 784-256-128-10, batch {batch}", C.fmt_time(m["mlserve"].median_ns),
                     "", C.fmt_time(m["onnxruntime"].median_ns), "",
                     C.fmt_ratio(m["onnxruntime"].median_ns / m["mlserve"].median_ns)])
    _graph_cases(rows, rng, "--all" in sys.argv)
    print(C.markdown_table(["case", "mlserve", "sklearn", "onnxruntime", "sklearn / mlserve",
                            "ort / mlserve"], rows))
    print()
    print(C.markdown_table(["model", "mlserve from_onnx", "mlserve load .mls", "ort session",
                            "mlserve RSS", "ort RSS"], _load_rows("--all" in sys.argv)))
    for line in C.machine_lines(["numpy", "scikit-learn", "onnx", "onnxruntime"]):
        print(line)


_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
_ZOO = ["resnet50", "inception_v2", "squeezenet", "shufflenet", "inception_v1", "densenet121"]
_ZOO_ALL = _ZOO + ["bvlc_alexnet", "vgg19", "zfnet512"]


def _zoo_model(name):
    sys.path.insert(0, _TESTS)
    from graph_support import ONNX_DATA, fill_light, logits_model

    return logits_model(fill_light(os.path.join(ONNX_DATA, "light", f"light_{name}.onnx")))


def _graph_cases(rows, rng, everything):
    sys.path.insert(0, _TESTS)
    from graph_support import small_cnn, zoo_input

    cnn = small_cnn(np.random.default_rng(0))
    net, sess = mlserve.from_onnx(cnn), _session(cnn)
    for batch in (1, 64):
        x = rng.normal(size=(batch, 1, 28, 28)).astype(np.float32)
        ref = sess.run(None, {"x": x})[0]
        assert np.abs(net.predict(x) - ref).max() <= 1e-4 * np.abs(ref).max()
        m = C.measure_interleaved({"mlserve": "net.predict(x)",
                                   "onnxruntime": "sess.run(None, {'x': x})"},
                                  {"net": net, "sess": sess, "x": x}, budget_s=0.6)
        rows.append([f"small CNN 28x28x1, batch {batch}", C.fmt_time(m["mlserve"].median_ns), "",
                     C.fmt_time(m["onnxruntime"].median_ns), "",
                     C.fmt_ratio(m["onnxruntime"].median_ns / m["mlserve"].median_ns)])
    for name in _ZOO_ALL if everything else _ZOO:
        model = _zoo_model(name)
        net, sess = mlserve.from_onnx(model), _session(model)
        iname, x = zoo_input(model, rng)
        ref = sess.run(None, {iname: x})[0]
        assert np.abs(net.predict(x) - ref).max() <= 1e-4 * np.abs(ref).max()
        m = C.measure_interleaved({"mlserve": "net.predict(x)",
                                   "onnxruntime": "sess.run(None, {n: x})"},
                                  {"net": net, "sess": sess, "x": x, "n": iname},
                                  budget_s=1.0, repeats=5)
        rows.append([f"light zoo {name}, batch 1", C.fmt_time(m["mlserve"].median_ns), "",
                     C.fmt_time(m["onnxruntime"].median_ns), "",
                     C.fmt_ratio(m["onnxruntime"].median_ns / m["mlserve"].median_ns)])


_LOAD_SCRIPT = r"""
import sys, time, json, numpy as np
which, path, shape = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))
if which == "ort":
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    base = rss(); t = time.perf_counter()
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    dt = time.perf_counter() - t
    s.run(None, {s.get_inputs()[0].name: np.zeros(shape, np.float32)})
else:
    import mlserve, onnx
    mlserve.set_num_threads(1)
    base = rss(); t = time.perf_counter()
    net = mlserve.from_onnx(path) if which == "onnx" else mlserve.load(path)
    dt = time.perf_counter() - t
    net.predict(np.zeros(shape, np.float32))
print(json.dumps([dt, rss() - base]))
"""


def _load_rows(everything):
    import json
    import subprocess
    import tempfile

    import onnx

    out = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["small_cnn"] + (_ZOO_ALL if everything else _ZOO):
            if name == "small_cnn":
                sys.path.insert(0, _TESTS)
                from graph_support import small_cnn

                model, shape = small_cnn(np.random.default_rng(0)), [1, 1, 28, 28]
            else:
                model, shape = _zoo_model(name), [1, 3, 224, 224]
            path = os.path.join(tmp, f"{name}.onnx")
            onnx.save(model, path)
            mlserve.save(mlserve.from_onnx(model), os.path.join(tmp, f"{name}.mls"))
            res = {}
            for which, p in (("onnx", path), ("mls", os.path.join(tmp, f"{name}.mls")),
                             ("ort", path)):
                done = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, which, p,
                                       json.dumps(shape)], capture_output=True, text=True,
                                      env=env, timeout=600, check=True)
                res[which] = json.loads(done.stdout.strip().splitlines()[-1])
            out.append([name, C.fmt_time(res["onnx"][0] * 1e9), C.fmt_time(res["mls"][0] * 1e9),
                        C.fmt_time(res["ort"][0] * 1e9), C.fmt_bytes(res["mls"][1]),
                        C.fmt_bytes(res["ort"][1])])
    return out


if __name__ == "__main__":
    main()
