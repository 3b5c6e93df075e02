"""One SMTP exchange with the configured relay, and what its answer means for the mail.

- ``sent``: the relay accepted the message (250 after DATA); it is the relay's from here.
- ``temporary``: try again later: a 4xx reply, no connection, a timeout, a dropped connection,
  a relay that will not do the TLS asked of it, or refused credentials (ours to mend, not the
  mail's fault: the mail waits rather than fail).
- ``permanent``: a 5xx reply to the sender, the recipient or the data: sending it again would
  get the same answer, so it is recorded as failed.

Security (``LEDGERDESK_SMTP_SECURITY``): ``tls`` speaks TLS from the first byte (port 465),
``starttls`` upgrades before anything else is said and refuses a relay that does not offer it
(credentials and mail never cross in clear), ``none`` is for the development sink and tests.
The relay's certificate is verified against the system's authorities.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass

from kernel.config import Settings

SENT = "sent"
TEMPORARY = "temporary"
PERMANENT = "permanent"


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    security: str
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    tls: ssl.SSLContext | None = None

    @classmethod
    def of(cls, settings: Settings) -> Relay:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_username,
            settings.smtp_password,
            settings.smtp_timeout_seconds,
        )

    def context(self) -> ssl.SSLContext:
        return self.tls or ssl.create_default_context()


@dataclass(frozen=True)
class Result:
    outcome: str
    # The relay's reply code, when it gave one (never its text: it may quote the address).
    code: int | None = None
    # What went wrong, by kind (an exception's class, a missing extension); never a message.
    detail: str | None = None


def classify(code: int) -> str:
    return PERMANENT if 500 <= code < 600 else TEMPORARY


def send(relay: Relay, sender: str, recipients: list[str], data: bytes) -> Result:
    """One attempt: connect, secure, authenticate, send; never raises."""
    try:
        if relay.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                relay.host, relay.port, timeout=relay.timeout, context=relay.context()
            )
        else:
            client = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
    except smtplib.SMTPResponseException as exc:  # the greeting was a refusal
        return Result(TEMPORARY, exc.smtp_code, "greeting")
    except (OSError, smtplib.SMTPException) as exc:
        return Result(TEMPORARY, None, type(exc).__name__)
    try:
        return _exchange(client, relay, sender, recipients, data)
    finally:
        # Once the relay accepted the message, nothing said after (QUIT refused, the connection
        # dropped) changes that: the outcome is settled before the goodbye.
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _exchange(
    client: smtplib.SMTP, relay: Relay, sender: str, recipients: list[str], data: bytes
) -> Result:
    try:
        client.ehlo()
        if relay.security == "starttls":
            if not client.has_extn("starttls"):
                return Result(TEMPORARY, None, "starttls_unavailable")
            client.starttls(context=relay.context())
            client.ehlo()
        if relay.username:
            try:
                client.login(relay.username, relay.password)
            except smtplib.SMTPAuthenticationError as exc:
                return Result(TEMPORARY, exc.smtp_code, "authentication")
        refused = client.sendmail(sender, recipients, data)
        if refused:  # some of several recipients refused: ours have one each
            code = min(code for code, _ in refused.values())
            return Result(classify(code), code, "recipient")
        return Result(SENT, 250)
    except smtplib.SMTPRecipientsRefused as exc:
        code = min(code for code, _ in exc.recipients.values())
        return Result(classify(code), code, "recipient")
    except smtplib.SMTPSenderRefused as exc:
        return Result(classify(exc.smtp_code), exc.smtp_code, "sender")
    except smtplib.SMTPDataError as exc:
        return Result(classify(exc.smtp_code), exc.smtp_code, "data")
    except smtplib.SMTPResponseException as exc:
        return Result(classify(exc.smtp_code), exc.smtp_code, type(exc).__name__)
    except (OSError, smtplib.SMTPException) as exc:
        return Result(TEMPORARY, None, type(exc).__name__)
