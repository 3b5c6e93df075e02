"""The reference pages the gateway serves beside its API, under the console's strict
Content-Security-Policy (no script at all, the console's stylesheet): ``/docs``, the API
reference, and ``/docs/problems``, the page every problem's ``type`` points into.

Each is rendered from the one source of what it shows: the reference from the OpenAPI document
the gateway serves (``gateway.openapi``), the problems page from the table of problem kinds
(``gateway.problems.KINDS``). Neither can describe an operation or a kind that does not exist,
nor miss one that does.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway import problems
from gateway.console import HEADERS
from gateway.http import api


def render_problems() -> str:
    rows = "\n".join(
        f'<tr id="{kind.slug}"><td><code>{escape(kind.type)}</code></td>'
        f"<td>{kind.status}</td><td>{escape(kind.title)}</td>"
        f"<td>{escape(kind.meaning.replace('``', ''))}</td></tr>"
        for kind in problems.KINDS
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Ledgerdesk API: problem types</title>
<link rel="stylesheet" href="/console/console.css">
</head>
<body>
<main>
<h1>Problem types</h1>
<p>Every error the API answers is <code>application/problem+json</code> (RFC 9457). Its
<code>type</code> names one of the kinds below; <code>request_id</code> (also the
<code>{problems.REQUEST_ID}</code> header of every answer) and <code>trace_id</code> name the
request, so the operator can find it.</p>
<table>
<thead><tr><th>type</th><th>status</th><th>title</th><th>what it means, what to do</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</main>
</body>
</html>
"""


class ReferenceRoutes:
    """Mixed into the gateway service: the reference pages."""

    @api("GET", problems.TYPE_BASE, documented=False)
    def problems_page(self, request: Request) -> Response:
        return Response(render_problems(), headers=HEADERS, content_type="text/html; charset=utf-8")


def _kind(schema: dict[str, Any]) -> str:
    """A schema in a few words: its name, or its type with what narrows it."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "anyOf" in schema or "oneOf" in schema:
        return " or ".join(_kind(s) for s in schema.get("anyOf", schema.get("oneOf", [])))
    kind = schema.get("type", "any")
    text = escape(" or ".join(kind) if isinstance(kind, list) else str(kind))
    if kind == "array" or (isinstance(kind, list) and "array" in kind):
        text += " of " + _kind(schema.get("items", {}))
    notes = [f"format {schema['format']}"] if "format" in schema else []
    if "enum" in schema:
        notes.append("one of " + ", ".join(json.dumps(v) for v in schema["enum"]))
    for key, word in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥")):
        if key in schema:
            notes.append(f"{word} {schema[key]}")
    if "maxLength" in schema:
        notes.append(f"length ≤ {schema['maxLength']}")
    if "pattern" in schema:
        notes.append(f"pattern <code>{escape(schema['pattern'])}</code>")
    if notes:
        text += " <small>(" + "; ".join(escape(n) if "<code>" not in n else n for n in notes)
        text += ")</small>"
    return text


def _example(content: dict[str, Any]) -> str:
    if "example" not in content:
        return ""
    shown = json.dumps(content["example"], indent=2, ensure_ascii=False)
    return f"<details><summary>example</summary><pre>{escape(shown)}</pre></details>"


def _operation(path: str, method: str, operation: dict[str, Any]) -> str:
    name = escape(operation["operationId"])
    parts = [
        f'<section class="operation" id="{name}">',
        f"<h3><code>{method.upper()} {escape(path)}</code></h3>",
        f"<p>{escape(operation.get('summary', ''))} <small>operationId <code>{name}</code>"
        "</small></p>",
    ]
    if operation.get("description"):
        parts.append(f"<p>{escape(operation['description'])}</p>")
    if operation.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{'required' if p.get('required') else ''}</td><td>{_kind(p['schema'])}"
            f"</td><td>{escape(p.get('description', ''))}</td></tr>"
            for p in operation["parameters"]
        )
        parts.append(
            "<table><thead><tr><th>parameter</th><th>in</th><th></th><th>schema</th>"
            f"<th></th></tr></thead><tbody>{rows}</tbody></table>"
        )
    for media, content in operation.get("requestBody", {}).get("content", {}).items():
        parts.append(
            f"<p>Body <code>{escape(media)}</code>: {_kind(content['schema'])}</p>"
            + _example(content)
        )
    answers = []
    for status, answer in operation["responses"].items():
        shown = []
        for media, content in answer.get("content", {}).items():
            if media == "application/problem+json":
                kinds = [k for k in problems.KINDS if str(k.status) == status]
                links = ", ".join(
                    f'<a href="{problems.TYPE_BASE}#{k.slug}">{escape(k.slug)}</a>' for k in kinds
                )
                shown.append(f"problem: {links}")
            else:
                shown.append(f"<code>{escape(media)}</code> {_kind(content['schema'])}")
                shown.append(_example(content))
        answers.append(
            f"<tr><td>{escape(status)}</td><td>{escape(answer['description'])}</td>"
            f"<td>{' '.join(shown)}</td></tr>"
        )
    parts.append(
        "<table><thead><tr><th>status</th><th>answer</th><th>body</th></tr></thead>"
        f"<tbody>{''.join(answers)}</tbody></table></section>"
    )
    return "\n".join(parts)


def _schema(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{escape(field)}</code></td><td>{_kind(spec)}</td>"
        f"<td>{'required' if field in required else ''}</td>"
        f"<td>{escape(spec.get('description', ''))}</td></tr>"
        for field, spec in schema.get("properties", {}).items()
    )
    table = (
        f"<table><thead><tr><th>field</th><th>schema</th><th></th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else f"<p>{_kind(schema)}</p>"
    )
    return f'<section id="schema-{escape(name)}"><h3>{escape(name)}</h3>{table}</section>'


def render_reference(document: dict[str, Any]) -> str:
    """The API reference: the OpenAPI document as a page, its operations grouped by tag."""
    grouped: dict[str, list[str]] = {tag["name"]: [] for tag in document.get("tags", [])}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for tag in operation.get("tags", ["other"]):
                grouped.setdefault(tag, []).append(_operation(path, method, operation))
    described = {tag["name"]: tag.get("description", "") for tag in document.get("tags", [])}
    contents = "".join(f'<li><a href="#tag-{escape(t)}">{escape(t)}</a></li>' for t in grouped)
    sections = "\n".join(
        f'<section id="tag-{escape(tag)}"><h2>{escape(tag)}</h2>'
        f"<p>{escape(described.get(tag, ''))}</p>{''.join(found)}</section>"
        for tag, found in grouped.items()
    )
    schemas = "\n".join(
        _schema(name, schema) for name, schema in document["components"]["schemas"].items()
    )
    info = document["info"]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(info["title"])} reference</title>
<link rel="stylesheet" href="/console/console.css">
</head>
<body>
<main>
<h1>{escape(info["title"])} reference</h1>
<p>{escape(info.get("description", ""))}</p>
<p>The machine-readable document: <a href="/v1/openapi.json">/v1/openapi.json</a> (OpenAPI
{escape(document["openapi"])}). Errors are <code>application/problem+json</code>; their kinds
are listed on <a href="{problems.TYPE_BASE}">the problem types page</a>. Authenticate with
<code>Authorization: Bearer &lt;API key&gt;</code>.</p>
<nav><h2>Resources</h2><ul>{contents}<li><a href="#schemas">schemas</a></li></ul></nav>
{sections}
<section id="schemas"><h2>Schemas</h2>
{schemas}
</section>
</main>
</body>
</html>
"""
