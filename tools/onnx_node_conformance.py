"""Run the onnx package's backend node test cases for the ops mlserve supports.

``onnx.backend.test.case.node.collect_testcases(None)`` builds every node case in
memory (the wheel lacks data/node). A case runs when all its ops are in
mlserve.convert._onnx.SUPPORTED_OPS and its first input is float32: its other
inputs become constants (initializers) with the case's values, and every output
is compared with the expected one at the case's rtol/atol.

    python tools/onnx_node_conformance.py            # prints the table
    python tools/onnx_node_conformance.py --write    # rewrites the section of docs/ONNX.md
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- node-conformance:begin -->", "<!-- node-conformance:end -->"


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        return collect_testcases(None)


def run_case(case):
    """'pass', 'refused: ...', 'mismatch: ...' or 'error: ...' for one node case."""
    import onnx
    from onnx import numpy_helper

    import mlserve

    results = []
    for inputs, outputs in case.data_sets:
        m = onnx.ModelProto()
        m.CopyFrom(case.model)
        g = m.graph
        names = [i.name for i in g.input]
        if not inputs or np.asarray(inputs[0]).dtype != np.float32 or \
                np.asarray(inputs[0]).ndim < 1:
            return "refused: the first input is not a float32 tensor"
        for name, v in zip(names[1:], inputs[1:]):
            g.initializer.append(numpy_helper.from_array(np.asarray(v), name))
        try:
            net = mlserve.from_onnx(m)
        except mlserve.ConvertError as exc:
            return f"refused: {str(exc)[:120]}"
        try:
            got = net.run({net.input_names[0]: np.asarray(inputs[0])})
        except ValueError as exc:
            return f"refused: {str(exc)[:120]}"
        for name, exp in zip([o.name for o in g.output], outputs):
            exp = np.asarray(exp)
            y = got[name]
            if y.shape != exp.shape or not np.allclose(y, exp, rtol=max(case.rtol, 1e-4),
                                                       atol=max(case.atol, 1e-6),
                                                       equal_nan=True):
                err = float(np.abs(y - exp).max()) if y.shape == exp.shape else None
                return f"mismatch: {name} shape {y.shape} vs {exp.shape}, max err {err}"
        results.append("pass")
    return "pass" if results else "refused: no data"


def collect(cases=None):
    from mlserve.convert._onnx import SUPPORTED_OPS

    out = []
    for case in cases if cases is not None else _cases():
        if case.kind != "node":
            continue
        ops = {n.op_type for n in case.model.graph.node}
        if not ops <= SUPPORTED_OPS:
            continue
        try:
            status = run_case(case)
        except Exception as exc:  # noqa: BLE001 - recorded, and the test fails on it
            status = f"error: {type(exc).__name__}: {exc}"
        out.append((case.name, status))
    return out


def markdown(results) -> str:
    passed = sorted(n for n, s in results if s == "pass")
    refused = sorted((n, s) for n, s in results if s.startswith("refused"))
    bad = sorted((n, s) for n, s in results if not s.startswith(("pass", "refused")))
    lines = [BEGIN, "",
             (f"{len(results)} node cases use only supported ops: {len(passed)} pass, "
              f"{len(refused)} are refused with a ConvertError (a configuration this version "
              f"does not run), {len(bad)} fail."), "",
             "Pass: " + ", ".join(p.removeprefix("test_") for p in passed) + ".", ""]
    if refused:
        lines += ["Refused with a ConvertError (most: a first input that is not float32, "
                  "3-D convolutions or pools, ops along the batch axis, two batched inputs "
                  "of one product): " + ", ".join(n.removeprefix("test_") for n, _ in refused)
                  + ".", ""]
    if bad:
        lines += ["Fail:", ""] + [f"- {n.removeprefix('test_')}: {s}" for n, s in bad]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main(argv):
    sys.path.insert(0, os.path.dirname(HERE))
    text = markdown(collect())
    if "--write" in argv:
        path = os.path.join(os.path.dirname(HERE), "docs", "ONNX.md")
        with open(path) as f:
            doc = f.read()
        if BEGIN in doc:
            doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip("\n") + "\n\n## onnx backend node tests\n\n" + text + "\n"
        with open(path, "w") as f:
            f.write(doc)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
