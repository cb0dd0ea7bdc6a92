"""The API in a browser: Swagger UI at /docs and a live models page at /ui.

Swagger UI's files come from the ``flask-swagger-ui`` package (its ``dist`` folder) and are
served by the app itself, so the page works offline and behind a firewall; the page loads
``openapi.json`` from the same mount point. ``/ui`` is one self-contained page that polls
``models`` (versions, aliases, canary weights) and ``metrics`` (request counts and latency
sums) every few seconds and shows per-model request rates and mean latency over the last
interval. Both pages and the assets follow the same rules as the document: the ``read``
scope when keys are configured, or open with ``MLSERVE_OPEN_ENDPOINTS = ["docs"]``; the
pages send the key a user types in (kept in the tab's sessionStorage) with their requests.
"""
from __future__ import annotations

import os

from flask import Response, abort, request, send_from_directory

__all__ = ["docs_asset", "docs_page", "ui_page"]

# the only files of Swagger UI's dist the page needs (nothing else is served from there)
_ASSETS = frozenset({
    "swagger-ui.css", "index.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
    "favicon-16x16.png", "favicon-32x32.png", "oauth2-redirect.html", "oauth2-redirect.js",
})  # fmt: skip
_NO_FRAMES = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}


def _swagger_dist() -> str:
    try:
        import flask_swagger_ui
    except ImportError:  # pragma: no cover - a dependency of mlserve
        abort(404, description="Swagger UI needs the flask-swagger-ui package")
    return os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist")


def docs_page() -> Response:
    """GET /docs: Swagger UI for this mount point's /openapi.json."""
    return Response(_DOCS_HTML, content_type="text/html; charset=utf-8", headers=_NO_FRAMES)


def docs_asset(name: str) -> Response:
    """GET /docs/assets/<name>: one of Swagger UI's files (a fixed list)."""
    if name not in _ASSETS:
        abort(404, description=f"no docs asset {name!r}")
    response = send_from_directory(_swagger_dist(), name, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def ui_page() -> Response:
    """GET /ui: models, versions, aliases, canary weights, request rate and latency."""
    refresh = request.args.get("refresh", "3")
    try:
        seconds = min(max(float(refresh), 1.0), 3600.0)
    except ValueError:
        abort(400, description=f"refresh must be a number of seconds, got {refresh!r}")
    page = _UI_HTML.replace("__REFRESH_MS__", str(int(seconds * 1000)))
    return Response(page, content_type="text/html; charset=utf-8", headers=_NO_FRAMES)


_KEY_SCRIPT = """
function apiKey() { return sessionStorage.getItem("mlserve-key") || ""; }
function authHeaders() { const k = apiKey(); return k ? {"Authorization": "Bearer " + k} : {}; }
function askKey() {
  const k = prompt("This server needs an API key with the read scope:");
  if (k) { sessionStorage.setItem("mlserve-key", k); location.reload(); }
}
"""

_DOCS_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mlserve API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/swagger-ui-standalone-preset.js"></script>
<script>
{_KEY_SCRIPT}
window.ui = SwaggerUIBundle({{
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  // the key typed into the page goes with every request, the document's included
  requestInterceptor: (req) => {{ const k = apiKey(); if (k && !req.headers.Authorization)
    req.headers.Authorization = "Bearer " + k; return req; }},
  responseInterceptor: (res) => {{ if (res.status === 401 && res.url.endsWith("openapi.json"))
    askKey(); return res; }},
}});
</script>
</body>
</html>
"""

_UI_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mlserve models</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; min-width: 60em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.4em 0.8em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#status { color: #666; margin: 0.5em 0 1em; }
.error { color: #b00; }
</style>
</head>
<body>
<h1>mlserve models</h1>
<div id="status">loading...</div>
<table id="models">
<thead><tr><th>model</th><th>task</th><th>versions</th><th>aliases (version: weight)</th>
<th>serving</th><th>requests/s</th><th>mean latency</th><th>requests</th></tr></thead>
<tbody></tbody>
</table>
<p><a href="docs">API documentation</a> · <a href="openapi.json">openapi.json</a></p>
<script>
""" + _KEY_SCRIPT + """
const REFRESH_MS = __REFRESH_MS__;
let previous = null;   // {time, perModel: {name: {count, sum}}}

function esc(s) { return String(s).replace(/[&<>"']/g, c => "&#" + c.charCodeAt(0) + ";"); }

// mlserve_requests_total and the latency histogram's _sum/_count, summed per model
function parseMetrics(text) {
  const perModel = {};
  const line = /^(mlserve_requests_total|mlserve_request_duration_seconds_sum|mlserve_request_duration_seconds_count)\\{([^}]*)\\}\\s+([0-9.eE+-]+)/;
  for (const row of text.split("\\n")) {
    const m = row.match(line);
    if (!m) continue;
    const model = (m[2].match(/model="([^"]*)"/) || [])[1];
    if (model === undefined || model === "") continue;
    const entry = perModel[model] || (perModel[model] = {requests: 0, sum: 0, count: 0});
    const value = parseFloat(m[3]);
    if (m[1] === "mlserve_requests_total") entry.requests += value;
    else if (m[1].endsWith("_sum")) entry.sum += value;
    else entry.count += value;
  }
  return perModel;
}

function aliasText(aliases) {
  return Object.entries(aliases || {}).map(([alias, split]) =>
    esc(alias) + " → " + split.map(s => s.version + (split.length > 1 ? ": " + s.weight + "%" : "")).join(", ")
  ).join("<br>");
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [models, metrics] = await Promise.all([
      fetch("models", {headers: authHeaders()}),
      fetch("metrics", {headers: authHeaders()}),
    ]);
    if (models.status === 401) { status.innerHTML = '<span class="error">401: this server needs an API key</span> <button onclick="askKey()">enter key</button>'; return; }
    if (!models.ok) throw new Error("GET models: " + models.status);
    const listing = (await models.json()).models;
    const now = Date.now() / 1000;
    const perModel = metrics.ok ? parseMetrics(await metrics.text()) : {};
    const rows = listing.map(m => {
      const cur = perModel[m.name] || {requests: 0, sum: 0, count: 0};
      const old = previous && previous.perModel[m.name];
      let rate = "–", latency = "–";
      if (old) {
        const dt = now - previous.time, dn = cur.count - old.count;
        rate = (Math.max(cur.requests - old.requests, 0) / dt).toFixed(1);
        if (dn > 0) latency = ((cur.sum - old.sum) / dn * 1000).toFixed(2) + " ms";
      } else if (cur.count > 0) {
        latency = (cur.sum / cur.count * 1000).toFixed(2) + " ms";
      }
      const serving = m.serving ? esc(m.serving.alias) + ": " + m.serving.versions.map(v => v.version).join(", ") : "–";
      return `<tr data-model="${esc(m.name)}"><td>${esc(m.name)}</td><td>${esc(m.task || "")}</td>` +
        `<td>${(m.versions || []).map(esc).join(", ")}</td><td>${aliasText(m.aliases)}</td>` +
        `<td>${serving}</td><td class="num">${rate}</td><td class="num">${latency}</td>` +
        `<td class="num">${cur.requests}</td></tr>`;
    });
    document.querySelector("#models tbody").innerHTML = rows.join("") ||
      '<tr><td colspan="8">no models published yet</td></tr>';
    previous = {time: now, perModel};
    status.textContent = listing.length + " model(s), updated " + new Date().toLocaleTimeString() +
      (metrics.ok ? "" : " (metrics unavailable: " + metrics.status + ")");
  } catch (err) {
    status.innerHTML = '<span class="error">' + esc(err) + "</span>";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""
