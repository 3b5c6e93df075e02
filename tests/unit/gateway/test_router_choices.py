"""Which cell the router sends a request to, and what it refuses (``gateway.router.Router``)."""

from __future__ import annotations

import json
import secrets

import pytest

from gateway import problems
from gateway.router import SIGNUP, Refused, Router, normalised_path
from kernel.config import ConfigurationError
from kernel.crypto import apikeys

CELLS = {"uk": "http://127.0.0.1:8001", "in": "http://127.0.0.1:8002"}


@pytest.fixture
def router() -> Router:
    return Router(CELLS, directory=None)


def test_the_first_cell_is_the_default(router: Router) -> None:
    assert router.default == "uk"
    with pytest.raises(ConfigurationError):
        Router({}, directory=None)


def test_a_key_goes_to_the_cell_of_its_region_and_an_old_key_to_none(router: Router) -> None:
    assert router.cell_of_key(f"Bearer {apikeys.generate('in')}") == "in"
    assert router.cell_of_key(f"bearer {apikeys.generate('uk')}") == "uk"
    assert router.cell_of_key(f"Bearer {apikeys.generate()}") is None
    assert router.cell_of_key("") is None
    assert router.cell_of_key("Basic dXNlcjpwYXNz") is None


def test_a_key_of_a_region_without_a_cell_is_refused(router: Router) -> None:
    with pytest.raises(Refused) as refused:
        router.cell_of_key(f"Bearer {apikeys.generate('sg')}")
    assert refused.value.kind is problems.UNAUTHORIZED
    assert "region" in refused.value.detail


def test_a_sign_up_goes_to_the_cell_of_its_region(router: Router) -> None:
    assert router.cell_of_signup(json.dumps({"region": "in"}).encode()) == "in"
    # What the cell refuses by itself is left to it.
    for body in (b"", b"{", b"[]", json.dumps({"region": 7}).encode(), b'{"company": "x"}'):
        assert router.cell_of_signup(body) is None
    with pytest.raises(Refused) as refused:
        router.cell_of_signup(json.dumps({"region": "sg"}).encode())
    assert refused.value.kind is problems.VALIDATION_FAILED
    assert refused.value.errors == {"region": ["must be one of: uk, in"]}


def test_the_region_header_chooses_a_cell_for_what_names_none(router: Router) -> None:
    assert router.cell_of_header("in") == "in"
    assert router.cell_of_header(None) is None
    with pytest.raises(Refused) as refused:
        router.cell_of_header("sg")
    assert refused.value.kind is problems.VALIDATION_FAILED


def test_a_tenant_the_directory_does_not_know_is_not_found(router: Router) -> None:
    with pytest.raises(Refused) as refused:
        router.cell_of_tenant(secrets.token_hex(8))
    assert refused.value.kind is problems.NOT_FOUND


def test_the_sign_up_path_is_recognised_however_it_is_written() -> None:
    for target in (
        "/v1/signup",
        "/v1/signup/",
        "/v1//signup",
        "/v1/%73ignup?x=1",
        "/v1/./x/../signup#f",
        "http://router/v1/signup",
    ):
        assert normalised_path(target) == SIGNUP, target
    assert normalised_path("/v1/signups") != SIGNUP
    assert normalised_path("//v1/signup") == SIGNUP
