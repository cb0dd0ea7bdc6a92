"""An existing Flask app, with its own routes, that mounts mlserve's blueprint at /ml.

Run it (after publishing a model, e.g. with `mlserve demo --check --dir models`):

    MLSERVE_STORE=models flask --app examples/flask_app.py run   # finds create_app()
    curl -s -H 'Content-Type: application/json' -d '{"features": [0.5, -1.2, 3.3, 0.1]}' \
        http://127.0.0.1:5000/ml/predict/demo

or under gunicorn:

    gunicorn -k gthread --threads 4 'examples.flask_app:create_app("models")'

The same app can use the extension instead of the blueprint:

    app.config["MLSERVE_STORE"] = "models"
    app.config["MLSERVE_URL_PREFIX"] = "/ml"
    mlserve.MLServe(app)
"""

from __future__ import annotations

import os

from flask import Flask, jsonify

import mlserve


def create_app(store_dir: str | None = None) -> Flask:
    app = Flask(__name__)

    # The app's own routes: mlserve does not touch them.
    @app.get("/")
    def index():
        return "Welcome to the shop. Scoring lives under /ml."

    @app.get("/orders/<int:order_id>")
    def order(order_id: int):
        return jsonify(order=order_id, status="shipped")

    # One call mounts V1 (/ml/v1/...), V2 (/ml/v2/...), MLflow (/ml/invocations),
    # /ml/predict/<name>, /ml/models and /ml/openapi.json.
    store = mlserve.ModelStore(store_dir or os.environ.get("MLSERVE_STORE", "models"))
    app.register_blueprint(mlserve.blueprint(store), url_prefix="/ml")
    return app


if __name__ == "__main__":
    create_app().run()
