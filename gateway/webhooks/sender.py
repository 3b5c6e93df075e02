"""One webhook POST: to an address checked just before (``addresses.check``), never to the
name resolved again; the whole exchange within a deadline; redirects never followed.

The connection goes to the checked address while the request names the host (``Host``, and for
``https`` the TLS server name the certificate is verified against), so DNS rebinding between
the check and the connection reaches nothing. A 3xx answer is an outcome of its own
(``redirect``), not followed: a redirect could point anywhere, a private address included. Only
the status code is kept; the answer's body is read (a little of it, so the connection closes
cleanly) and dropped.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import eventlet

from gateway.webhooks import addresses

# Read of an answer's body before it is dropped: enough for a receiver's short message.
_ANSWER_BYTES = 4096

# Outcomes, as the delivery log shows them.
DELIVERED = "delivered"  # 2xx
HTTP_ERROR = "http_error"  # 4xx, 5xx, or anything else not 2xx or 3xx
REDIRECT = "redirect"  # 3xx: not followed
TIMEOUT = "timeout"
CONNECTION_FAILED = "connection_failed"
TLS_FAILED = "tls_failed"
ADDRESS_REFUSED = "address_refused"  # the URL or its addresses are no longer allowed
SECRET_GONE = "secret_gone"  # the tenant's key is shredded: nothing can be signed any more
OUTCOMES = (
    DELIVERED,
    HTTP_ERROR,
    REDIRECT,
    TIMEOUT,
    CONNECTION_FAILED,
    TLS_FAILED,
    ADDRESS_REFUSED,
    SECRET_GONE,
)


@dataclass(frozen=True)
class Result:
    outcome: str
    status_code: int | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == DELIVERED


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to ``address`` while its requests name ``host``."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to ``address``, then TLS with ``host`` as the server name (SNI) whose
    certificate must verify."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def post(
    destination: addresses.Destination,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> Result:
    """POST ``body`` to the destination's first address that takes a connection, all within
    ``timeout`` seconds; the result names the outcome, never the URL."""
    target = destination.target
    try:
        with eventlet.Timeout(timeout):
            last = Result(CONNECTION_FAILED)
            for address in destination.addresses:
                try:
                    return _exchange(target, address, headers, body, timeout, tls)
                except TimeoutError:
                    return Result(TIMEOUT)
                except ssl.SSLError:
                    return Result(TLS_FAILED)
                except (OSError, http.client.HTTPException, ValueError):
                    last = Result(CONNECTION_FAILED)  # the next address, if any
            return last
    except eventlet.Timeout:
        return Result(TIMEOUT)


def _exchange(
    target: addresses.Target,
    address: str,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,
    tls: ssl.SSLContext | None,
) -> Result:
    connection: http.client.HTTPConnection
    if target.tls:
        context = tls or ssl.create_default_context()
        connection = _PinnedHTTPSConnection(target.host, target.port, address, timeout, context)
    else:
        connection = _PinnedHTTPConnection(target.host, target.port, address, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=dict(headers))
        answer = connection.getresponse()
        answer.read(_ANSWER_BYTES)
        status = answer.status
    finally:
        connection.close()
    if 200 <= status < 300:
        return Result(DELIVERED, status)
    if 300 <= status < 400:
        return Result(REDIRECT, status)
    return Result(HTTP_ERROR, status)
