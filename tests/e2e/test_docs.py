"""/docs: the API reference the gateway serves, rendered from the document it serves, under the
console's strict Content-Security-Policy (nothing but the gateway's own files, no script)."""

from __future__ import annotations

from gateway.console import POLICY
from tests.e2e.conftest import Stack


def test_the_reference_lists_every_operation_of_the_served_document(stack: Stack):
    page = stack.call("GET", "/docs")
    document = stack.call("GET", "/v1/openapi.json").json()

    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == POLICY
    # Nothing loaded but the console's stylesheet: no script, no other source.
    assert "<script" not in page.text and " src=" not in page.text
    assert page.text.count("<link ") == 1 and 'href="/console/console.css"' in page.text
    operation_ids = [
        operation["operationId"]
        for operations in document["paths"].values()
        for operation in operations.values()
    ]
    assert len(operation_ids) > 50
    for operation_id in operation_ids:
        assert f'id="{operation_id}"' in page.text, operation_id
    for tag in document["tags"]:
        assert f'id="tag-{tag["name"]}"' in page.text
    # Examples shown, the problems page linked, and what it links to is there.
    assert "&quot;Acme Support Ltd&quot;" in page.text
    assert 'href="/docs/problems#version-conflict"' in page.text
    assert stack.call("GET", "/docs/problems").status_code == 200
