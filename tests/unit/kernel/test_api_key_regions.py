"""API keys name the region they were issued in, so the router sends them on unlooked-up."""

from __future__ import annotations

import secrets

import pytest

from kernel.config import ConfigurationError, Settings
from kernel.crypto import apikeys


def test_a_key_issued_in_a_region_names_it_and_keeps_its_256_bits() -> None:
    key = apikeys.generate("in")

    assert key.startswith("ldk_in_")
    assert len(key.removeprefix("ldk_in_")) == 43
    assert apikeys.region_of(key) == "in"
    assert apikeys.region_of(apikeys.generate("eu-west")) == "eu-west"


def test_a_key_without_a_region_names_none_even_when_its_token_holds_underscores() -> None:
    assert apikeys.region_of(apikeys.generate()) is None
    # Such a token splits at "_" like a region key would: its length tells them apart.
    token = "uk_" + secrets.token_urlsafe(32)[:40]
    assert apikeys.region_of("ldk_" + token) is None
    for key in ("", "ldk_", "ldk_nope", "Bearer x", "ldx_uk_" + secrets.token_urlsafe(32)):
        assert apikeys.region_of(key) is None


def test_cells_are_read_in_order_and_malformed_ones_refused() -> None:
    settings = Settings.from_env({"LEDGERDESK_CELLS": " uk = http://a:8001/ ,in=https://b:8443"})
    assert list(settings.cells.items()) == [("uk", "http://a:8001"), ("in", "https://b:8443")]
    for raw in ("uk", "uk=ftp://a", "=http://a", "uk=http://a,uk=http://b"):
        with pytest.raises(ConfigurationError, match="LEDGERDESK_CELLS"):
            Settings.from_env({"LEDGERDESK_CELLS": raw})


def test_the_cells_mail_listeners_are_smtp_or_lmtp_urls() -> None:
    settings = Settings.from_env(
        {"LEDGERDESK_CELLS_MAIL_IN": "uk=smtp://127.0.0.1:2526,in=lmtp://tickets-in:24"}
    )
    assert settings.cells_mail_in == {"uk": "smtp://127.0.0.1:2526", "in": "lmtp://tickets-in:24"}
    with pytest.raises(ConfigurationError, match="LEDGERDESK_CELLS_MAIL_IN"):
        Settings.from_env({"LEDGERDESK_CELLS_MAIL_IN": "uk=http://127.0.0.1:2526"})
