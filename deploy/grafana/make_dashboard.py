"""Writes mlserve-dashboard.json (Grafana): run `python deploy/grafana/make_dashboard.py`
after editing the panels here. tests/test_deploy.py checks that the file is what this
script writes, and that every metric it queries is one a real server exposes."""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'model=~"$model"'
SEL_V = 'model=~"$model", version=~"$version"'


def panel(pid, title, exprs, unit, x, y, w=12, h=8, kind="timeseries"):
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def quantiles(metric, by="model"):
    return [
        (
            (f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{SEL}}}[$__rate_interval])))"),
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


PANELS = [
    panel(1, "Request rate by model and version", [(
        f"sum by (model, version) (rate(mlserve_requests_total{{{SEL_V}}}[$__rate_interval]))",
        "{{model}} v{{version}}",
    )], "reqps", 0, 0),
    panel(2, "Errors (4xx, 5xx) by model and version", [(
        (f'sum by (model, version, status) (rate(mlserve_requests_total{{{SEL_V}, '
        f'status=~"4..|5.."}}[$__rate_interval]))'),
        "{{model}} v{{version}} {{status}}",
    )], "reqps", 12, 0),
    panel(3, "Server error ratio (5xx / all)", [(
        (f'sum by (model) (rate(mlserve_requests_total{{{SEL_V}, status=~"5.."}}'
        f"[$__rate_interval])) / sum by (model) (rate(mlserve_requests_total{{{SEL_V}}}"
        "[$__rate_interval]))"),
        "{{model}}",
    )], "percentunit", 0, 8),
    panel(4, "Latency quantiles", quantiles("mlserve_request_duration_seconds"), "s", 12, 8),
    panel(5, "Micro-batch size (rows per model call)", quantiles("mlserve_batch_size") + [(
        (f"sum by (model) (rate(mlserve_batch_size_sum{{{SEL}}}[$__rate_interval])) / "
        f"sum by (model) (rate(mlserve_batch_size_count{{{SEL}}}[$__rate_interval]))"),
        "mean {{model}}",
    )], "short", 0, 16),
    panel(6, "Batch queue delay", quantiles("mlserve_batch_queue_delay_seconds"), "s", 12, 16),
    panel(7, "Requests in flight", [(
        "sum(mlserve_requests_in_flight)", "in flight",
    )], "short", 0, 24),
    panel(8, "Rows per request", quantiles("mlserve_request_rows"), "short", 12, 24),
    panel(9, "Model load time (p90)", [(
        ("histogram_quantile(0.9, sum by (model, le) "
        f"(rate(mlserve_model_load_seconds_bucket{{{SEL}}}[1h])))"),
        "{{model}}",
    )], "s", 0, 32),
    panel(10, "Instances up", [('sum(up{job=~"$job"})', "up")], "short", 12, 32, kind="stat"),
]  # fmt: skip


def variable(name, query, include_all=True):
    return {
        "name": name,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": include_all,
        "multi": include_all,
        "current": {"text": "All", "value": "$__all"} if include_all else {},
    }


DASHBOARD = {
    "uid": "mlserve",
    "title": "mlserve",
    "description": "Requests, errors, latency, micro-batching and in-flight requests of "
    "mlserve servers, per model and version (metrics of mlserve/serving/metrics.py).",
    "tags": ["mlserve", "model serving"],
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "time": {"from": "now-1h", "to": "now"},
    "refresh": "30s",
    "templating": {
        "list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            variable("job", "label_values(up, job)"),
            variable("model", "label_values(mlserve_requests_total, model)"),
            variable("version", 'label_values(mlserve_requests_total{model=~"$model"}, version)'),
        ]
    },
    "panels": PANELS,
}

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlserve-dashboard.json")


def render() -> str:
    return json.dumps(DASHBOARD, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    with open(PATH, "w") as f:
        f.write(render())
