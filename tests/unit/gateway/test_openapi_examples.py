"""Every request body and every answer of the OpenAPI document shows an example, and each
example is valid against the schema it illustrates (JSON Schema 2020-12, formats checked)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from gateway import examples
from gateway.service import OPENAPI, document

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def _contents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            if "requestBody" in operation:
                for media, content in operation["requestBody"]["content"].items():
                    found.append((f"{name} request {media}", content))
            for status, answer in operation["responses"].items():
                for media, content in answer.get("content", {}).items():
                    found.append((f"{name} {status} {media}", content))
    return found


CONTENTS = _contents()


def _is_bytes(content: dict[str, Any]) -> bool:
    return content["schema"].get("format") == "binary"


@pytest.mark.parametrize(("where", "content"), CONTENTS, ids=[w for w, _ in CONTENTS])
def test_every_body_and_answer_has_an_example_valid_against_its_schema(where, content):
    if _is_bytes(content):
        # Bytes of any type (an upload, an archive): no JSON example can show them.
        assert "example" not in content
        return
    assert "example" in content, where
    schema = {**content["schema"], "components": OPENAPI["components"]}
    errors = list(
        jsonschema.Draft202012Validator(schema, format_checker=FORMATS).iter_errors(
            content["example"]
        )
    )
    assert not errors, f"{where}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_every_operation_has_its_request_body_and_success_answer_shown():
    for path, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            success = [code for code in operation["responses"] if code.startswith("2")]
            shown = [operation.get("requestBody", {})] + [
                operation["responses"][code] for code in success
            ]
            for part in shown:
                for content in part.get("content", {}).values():
                    assert "example" in content or _is_bytes(content), (method, path)


def test_a_problem_example_is_of_the_kind_its_status_answers():
    answers = OPENAPI["paths"]["/v1/tickets/{ticket_id}"]["patch"]["responses"]
    conflict = answers["409"]["content"]["application/problem+json"]["example"]
    assert conflict["status"] == 409 and conflict["type"].startswith("/docs/problems#")
    invalid = answers["422"]["content"]["application/problem+json"]["example"]
    assert invalid["type"] == "/docs/problems#validation-failed" and invalid["errors"]


def test_examples_are_made_from_the_schema_so_a_new_constraint_changes_them():
    components: dict[str, Any] = {}
    schema = {
        "type": "object",
        "properties": {
            "subject": {"type": "string"},
            "code": {"type": "string", "minLength": 12, "maxLength": 12},
            "colour": {"type": "string", "enum": ["teal", "amber"]},
            "count": {"type": "integer", "minimum": 5},
            "given": {"type": "string", "example": "as declared"},
        },
    }
    shown = examples.example(schema, components)
    assert shown["subject"] == examples.NAMED["subject"]
    assert len(shown["code"]) == 12 and shown["colour"] == "teal" and shown["count"] == 5
    assert shown["given"] == "as declared"


def test_the_served_document_names_the_deployments_regions_for_a_sign_up():
    region = document(("uk", "sg"))["components"]["schemas"]["SignUpV1"]["properties"]["region"]
    assert region["enum"] == ["uk", "sg"]
    example = document(("sg",))["paths"]["/v1/signup"]["post"]["requestBody"]["content"]
    assert example["application/json"]["example"]["region"] == "sg"
