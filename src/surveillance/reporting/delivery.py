"""E-mail delivery of a report: SMTP with STARTTLS or TLS, the files attached (or linked when too large),
retried a configured number of times. Credentials come from the environment."""

from __future__ import annotations

import logging
import mimetypes
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from surveillance.config import EmailSettings, interval_seconds

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """Every attempt failed; the message holds the last error."""


@dataclass(frozen=True)
class Delivery:
    recipients: tuple[str, ...]
    attempts: int
    attached: bool


def report_message(
    email: EmailSettings,
    recipients: Sequence[str],
    subject: str,
    text: str,
    files: Sequence[Path],
    links: Sequence[str],
) -> tuple[EmailMessage, bool]:
    """The message, with the files attached when they fit under ``max_attachment_mb``, else their links."""
    message = EmailMessage()
    message["From"] = email.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    size = sum(f.stat().st_size for f in files)
    attach = size <= email.max_attachment_mb * 1024 * 1024
    if not attach:
        if not links:
            raise DeliveryError(
                f"the report ({size / 1e6:.1f} MB) is over reports.email.max_attachment_mb "
                f"({email.max_attachment_mb}) and reports.email.link_base_url is not set to link it"
            )
        text += "\n\nThe report is too large to attach; download it:\n" + "\n".join(links)
    message.set_content(text)
    if attach:
        for path in files:
            kind, _ = mimetypes.guess_type(path.name)
            maintype, subtype = (kind or "application/octet-stream").split("/", 1)
            message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return message, attach


def send_report(
    email: EmailSettings,
    recipients: Sequence[str],
    subject: str,
    text: str,
    files: Sequence[Path],
    links: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    on_failure: Callable[[int, str], None] | None = None,
) -> Delivery:
    """Send the report, trying up to ``email.attempts`` times ``email.retry_delay`` apart.

    ``on_failure(attempt, error)`` is called after each failed attempt (the task records it)."""
    if not email.host:
        raise DeliveryError("e-mail is off: set reports.email.host (and sender) to send reports")
    if not recipients:
        raise DeliveryError("no recipients")
    environ = os.environ if environ is None else environ
    message, attached = report_message(email, recipients, subject, text, files, links)
    last: Exception | None = None
    for attempt in range(1, email.attempts + 1):
        try:
            _send(email, message, environ)
            return Delivery(tuple(recipients), attempt, attached)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            last = exc
            log.warning("e-mail attempt %d of %d to %s failed: %s", attempt, email.attempts, email.host, exc)
            if on_failure is not None:
                on_failure(attempt, f"{type(exc).__name__}: {exc}")
            if attempt < email.attempts:
                time.sleep(interval_seconds(email.retry_delay))
    raise DeliveryError(f"{email.attempts} attempts to {email.host}:{email.port} failed; last: {last}")


def _tls_context(email: EmailSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if email.ca_file:
        context.load_verify_locations(cafile=email.ca_file)
    return context


def _send(email: EmailSettings, message: EmailMessage, environ: Mapping[str, str]) -> None:
    timeout = interval_seconds(email.timeout)
    user, password = environ.get(email.username_env), environ.get(email.password_env)
    if email.security == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            email.host, email.port, timeout=timeout, context=_tls_context(email)
        )
    else:
        client = smtplib.SMTP(email.host, email.port, timeout=timeout)
    with client:
        if email.security == "starttls":
            client.starttls(context=_tls_context(email))
        if user and password:
            client.login(user, password)
        client.send_message(message)
