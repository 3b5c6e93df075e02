"""The reference pages the gateway serves beside its API, under the console's strict
Content-Security-Policy: ``/docs/problems``, the page every problem's ``type`` points into.

Built from the one table of problem kinds (``gateway.problems.KINDS``), so the page cannot name a
kind the gateway never answers with, nor miss one it does.
"""

from __future__ import annotations

from html import escape

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
