"""A real S3-compatible server for the attachments' object store: moto's server mode, started
as a process of its own on a free port (never a mock of the client), and a new bucket a test."""

from __future__ import annotations

import contextlib
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator

import botocore.httpsession
import pytest
import requests

from kernel.config import Settings
from kernel.testing import free_port, wait_until
from services.tickets.chunk_store import S3Chunks, s3_client

# pytest's plugins import urllib3 before the root conftest lets eventlet patch ssl, so botocore
# (which takes urllib3's SSLContext) would build the unpatched class whose setters then recurse
# into eventlet's: the test process gives it the patched one. A service's process patches first
# (kernel.runner) and needs nothing of the kind.
botocore.httpsession.SSLContext = ssl.SSLContext  # type: ignore[attr-defined]

# Any keys do for moto; they are still sent and signed, as a real store needs them.
KEYS = {
    "attachment_s3_access_key_id": "moto-test-access-key",
    "attachment_s3_secret_access_key": "moto-test-secret-access-key",
}


@contextlib.contextmanager
def running_s3_server() -> Iterator[str]:
    """moto's S3 server in a process of its own; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(url + "/moto-api/", timeout=2).status_code < 500
        return process.poll() is not None  # gone: fail below rather than wait

    try:
        wait_until(up, timeout=60, interval=0.2, what="the S3 server")
        assert process.poll() is None, "the S3 server did not start"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    with running_s3_server() as url:
        yield url


def s3_settings(url: str, bucket: str, base: Settings | None = None) -> Settings:
    """``base`` (the defaults) configured for the object store at ``url``."""
    return (base or Settings()).with_overrides(
        attachment_store="s3", attachment_s3_endpoint=url, attachment_s3_bucket=bucket, **KEYS
    )


def s3_env(url: str, bucket: str) -> dict[str, str]:
    """The variables that put a stack's attachments in ``bucket``."""
    return {
        "LEDGERDESK_ATTACHMENT_STORE": "s3",
        "LEDGERDESK_ATTACHMENT_S3_ENDPOINT": url,
        "LEDGERDESK_ATTACHMENT_S3_BUCKET": bucket,
        "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID": KEYS["attachment_s3_access_key_id"],
        "LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY": KEYS["attachment_s3_secret_access_key"],
    }


def new_bucket(url: str, versioned: bool = False) -> S3Chunks:
    """A bucket of its own (a test's), and the chunk store on it."""
    bucket = "ldt-" + secrets.token_hex(6)
    client = s3_client(s3_settings(url, bucket))
    client.create_bucket(Bucket=bucket)
    if versioned:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3Chunks(client, bucket)
