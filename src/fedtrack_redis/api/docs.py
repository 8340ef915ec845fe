"""``/docs``: the API reference as a plain page rendered on the server from the app's own
OpenAPI document.

FastAPI's Swagger UI loads its script and stylesheet from a CDN: that needs the network,
and it would run a third party's script on the origin where the dashboard keeps its
token. This page has no script at all (its policy allows only the dashboard's
stylesheet); `/openapi.json` stays the machine-readable document for tools.
"""

from __future__ import annotations

from html import escape
from typing import Any

METHODS = ("get", "put", "post", "delete", "patch")


def render(spec: dict[str, Any]) -> str:
    """The whole page for an OpenAPI document."""
    info = spec.get("info", {})
    sections = [
        _operation(method, path, operation)
        for path, item in spec.get("paths", {}).items()
        for method, operation in item.items()
        if method in METHODS
    ]
    title = escape(str(info.get("title", "API")))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · reference</title>
<link rel="stylesheet" href="/dashboard.css">
</head>
<body>
<div class="docs">
<h1>{title} <span class="muted">{escape(str(info.get("version", "")))}</span></h1>
<p>{escape(str(info.get("description", "")))}</p>
<p>Routes marked <b>token</b> need <code>Authorization: Bearer &lt;token&gt;</code>
(<code>FEDTRACK_ADMIN_TOKEN</code> or a named token of <code>FEDTRACK_ADMIN_TOKENS</code>;
a <code>read</code> token may only GET). The machine-readable document is
<a href="/openapi.json">/openapi.json</a>; the dashboard is <a href="/">/</a>.</p>
{"".join(sections)}
</div>
</body>
</html>
"""


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    secured = bool(operation.get("security"))
    summary = escape(str(operation.get("summary", "")))
    description = escape(str(operation.get("description", "")))
    rows = "".join(
        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            escape(str(p.get("name", ""))),
            escape(str(p.get("in", ""))),
            "yes" if p.get("required") else "no",
            escape(_type(p.get("schema", {}))),
            escape(str(p.get("description", ""))),
        )
        for p in operation.get("parameters", [])
    )
    parameters = (
        "<table><thead><tr><th>parameter</th><th>in</th><th>required</th><th>type</th>"
        f"<th>meaning</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    body_line = (
        f"<p>Body: <code>{escape(_type(body.get('schema', {})))}</code> (JSON)</p>" if body else ""
    )
    codes = sorted(str(code) for code in operation.get("responses", {}))
    responses = ", ".join(escape(code) for code in codes)
    return f"""<section class="operation" id="{escape(method + path)}">
<h2><code>{method.upper()} {escape(path)}</code>{" · <b>token</b>" if secured else ""}</h2>
<p>{summary}</p><p class="muted">{description}</p>
{parameters}{body_line}<p class="muted">Responses: {responses}</p>
</section>
"""


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    return str(schema.get("type", "any"))
