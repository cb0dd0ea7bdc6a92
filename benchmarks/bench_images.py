"""Image classification from PNG bytes: mlserve vs the articles' Keras + Pillow code.

    PYTHONPATH=. python benchmarks/bench_images.py            # ~20 s
    PYTHONPATH=. python benchmarks/bench_images.py --quick    # smoke run

The articles' digit classifier (Keras, 28x28x1 -> Flatten -> Dense 128 relu ->
Dense 10 softmax; the Dense head runs in mlserve's C runtime today), fed
Pillow-made 28x28 PNGs:

* in process: ``mlserve.with_image_input(mlserve.convert(model), ...)
  .predict(pngs)`` vs Pillow decode (the same pipeline) + ``model(x)`` (Keras 3
  on JAX, its fastest call, not ``model.predict``);
* over Flask's test client (the whole request path without sockets): POST
  /predict/digits with the PNG body (mlserve's blueprint, batching off) vs the
  articles' view (``request.files`` / body -> Pillow -> Keras -> JSON).

Outputs are checked equal (1e-5) before timing; one thread each (Keras/XLA
pinned to one thread with XLA_FLAGS); medians of interleaved samples.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    fmt_ratio,
    fmt_time,
    load_average,
    machine_lines,
    markdown_table,
    measure_interleaved,
)


def pngs(n: int, seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = Image.fromarray(rng.integers(0, 256, size=(28, 28), dtype=np.uint8), "L")
        buffer = io.BytesIO()
        im.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def keras_decode(blobs: list[bytes]) -> np.ndarray:
    """What the articles write: Pillow, /255, a batch of (28, 28, 1)."""
    from PIL import Image

    return np.stack([
        np.asarray(Image.open(io.BytesIO(b)).convert("L").resize((28, 28), Image.BILINEAR),
                   dtype=np.float32)[:, :, None] / np.float32(255.0)
        for b in blobs
    ])  # fmt: skip


def keras_app(model):
    from flask import Flask, jsonify, request

    app = Flask("articles")

    @app.post("/predict")
    def predict():
        blobs = [f.read() for f in request.files.getlist("file")] or [request.get_data()]
        probs = np.asarray(model(keras_decode(blobs), training=False))
        return jsonify(predictions=[{"label": int(p.argmax()), "probability": float(p.max())}
                                    for p in probs])

    return app.test_client()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    budget = 0.2 if args.quick else 1.0
    repeats = 5 if args.quick else 11

    import keras
    from flask import Flask
    from keras import layers

    import mlserve

    mlserve.set_num_threads(1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                              layers.Dense(128, activation="relu"),
                              layers.Dense(10, activation="softmax")])
    image = mlserve.with_image_input(mlserve.convert(model), size=(28, 28), mode="L",
                                     layout="NHWC", labels=[str(d) for d in range(10)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = mlserve.ModelStore(os.path.join(tmp, "store"))
        store.publish("digits", image, alias="production")
        app = Flask("bench")
        app.config.update(MLSERVE_ACCESS_LOG=False, MLSERVE_BATCHING=False)
        app.register_blueprint(mlserve.blueprint(store, reload_interval=0))
        ns = {"ml": image, "keras": model, "np": np, "decode": keras_decode,
              "mlc": app.test_client(), "kc": keras_app(model), "io": io}
        for n in (1, 16):
            ns["blobs"] = blobs = pngs(n, seed=n)
            expected = np.asarray(model(keras_decode(blobs), training=False))
            np.testing.assert_allclose(image.predict(blobs), expected, rtol=1e-5, atol=1e-6)
            times = measure_interleaved({
                "mlserve": "ml.predict(blobs)",
                "keras": "np.asarray(keras(decode(blobs), training=False))",
            }, ns, budget_s=budget, repeats=repeats)  # fmt: skip
            rows.append([f"in process, {n} PNG", fmt_time(times["mlserve"].median_ns),
                         fmt_time(times["keras"].median_ns),
                         fmt_ratio(times["keras"].median_ns / times["mlserve"].median_ns)])
        ns["png"] = pngs(1, seed=99)[0]
        a = ns["mlc"].post("/predict/digits", data=ns["png"], content_type="image/png").json
        b = ns["kc"].post("/predict", data=ns["png"], content_type="image/png").json
        assert a["predictions"][0]["label"] == str(b["predictions"][0]["label"]), (a, b)
        ns["files16"] = pngs(16, seed=7)
        times = measure_interleaved({
            "mlserve": "mlc.post('/predict/digits', data=png, content_type='image/png')",
            "keras": "kc.post('/predict', data=png, content_type='image/png')",
            "mlserve16": "mlc.post('/predict/digits', content_type='multipart/form-data', "
                         "data={'file': [(io.BytesIO(b), 'x.png') for b in files16]})",
            "keras16": "kc.post('/predict', content_type='multipart/form-data', "
                       "data={'file': [(io.BytesIO(b), 'x.png') for b in files16]})",
        }, ns, budget_s=budget, repeats=repeats)  # fmt: skip
        for label, m, k in (("POST /predict, 1 PNG body", "mlserve", "keras"),
                            ("POST /predict, 16 PNG multipart", "mlserve16", "keras16")):
            rows.append([label, fmt_time(times[m].median_ns), fmt_time(times[k].median_ns),
                         fmt_ratio(times[k].median_ns / times[m].median_ns)])
    print("\n".join(machine_lines(["numpy", "keras", "jax", "pillow", "flask"])))
    print(f"load average: {load_average()}")
    print(markdown_table(["digit MLP (Keras), PNG in", "mlserve", "Pillow + Keras",
                          "Keras / mlserve"], rows))


if __name__ == "__main__":
    main()
