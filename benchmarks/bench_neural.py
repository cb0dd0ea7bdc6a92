"""Neural networks: mlserve's C graph vs onnxruntime vs scikit-learn, 1 thread, one run.

    python benchmarks/bench_neural.py           # ~10 s

Cases (issue 13, step 1; the CNN case waits for Conv/Pool in the graph runtime):

* scikit-learn MLPClassifier (20 features, hidden (100,), 3 classes), predict_proba
  of one row: mlserve.convert(mlp) vs sklearn vs onnxruntime on the same weights
  as an ONNX graph (Gemm/Relu/Gemm/Softmax);
* an ONNX MLP 784 -> 256 -> 128 -> 10 (Gemm+Relu, Softmax) at batch 1 and 64:
  mlserve.from_onnx vs onnxruntime.

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
    print(C.markdown_table(["case", "mlserve", "sklearn", "onnxruntime", "sklearn / mlserve",
                            "ort / mlserve"], rows))
    for line in C.machine_lines(["numpy", "scikit-learn", "onnx", "onnxruntime"]):
        print(line)


if __name__ == "__main__":
    main()
