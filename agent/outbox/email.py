"""Email delivery: one message per outbox row, to the configured SMTP relay (aiosmtplib).

Every message carries a `Message-ID` derived from the row's idempotency key and the key itself
in `X-Garrison-Idempotency-Key`, so a second delivery of the same row (see the dispatcher's note
on the one window where that can happen) is recognisably the same message to the relay, to
mail filters and to people. SMTP 5xx answers are permanent; 4xx answers, timeouts and dropped
connections are retried.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from agent.domain import JSON
from agent.outbox.delivery import DeliveryFailed
from agent.outbox.settings import OutboxSettings
from agent.ports import OutboxItem

EMAIL_NOT_CONFIGURED = "email_not_configured"
IDEMPOTENCY_HEADER = "X-Garrison-Idempotency-Key"


def message_id(idempotency_key: str, sender: str) -> str:
    """The same key always gives the same id, under the sender's domain (RFC 5322 msg-id)."""
    domain = sender.rpartition("@")[2] or "garrison.invalid"
    return f"<garrison.{idempotency_key.replace(':', '.')}@{domain}>"


def build_message(item: OutboxItem, sender: str) -> EmailMessage:
    payload = item.payload
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(payload["to"])
    message["Subject"] = payload["subject"]
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(item.idempotency_key, sender)
    message[IDEMPOTENCY_HEADER] = item.idempotency_key
    message.set_content(payload["body"])
    return message


def _smtp_failure(exc: aiosmtplib.SMTPResponseException) -> DeliveryFailed:
    # 5xx is the relay's final word on this message; 4xx means "not now".
    return DeliveryFailed(
        "smtp_refused",
        f"{exc.code} {exc.message}",
        permanent=exc.code >= 500,
        response={"smtp_code": exc.code, "message": exc.message[:500]},
    )


class SmtpTransport:
    def __init__(self, settings: OutboxSettings) -> None:
        self._settings = settings

    async def deliver(self, item: OutboxItem) -> JSON:
        s = self._settings
        if s.smtp_host is None or s.smtp_from is None:
            # The relay was removed since the step queued this: an operator can configure one
            # and requeue the row (`garrison outbox retry`).
            raise DeliveryFailed(
                EMAIL_NOT_CONFIGURED, "no SMTP relay is configured", permanent=True
            )
        message = build_message(item, s.smtp_from)
        try:
            refused, reply = await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                start_tls=s.smtp_starttls,
                timeout=s.outbox_delivery_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryFailed(
                "smtp_refused",
                "every recipient was refused: "
                + "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients),
                permanent=all(code >= 500 for code in codes),
                response={"refused": {r.recipient: r.code for r in exc.recipients}},
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_failure(exc) from exc
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. no STARTTLS: a setting to fix
            raise DeliveryFailed("smtp_refused", str(exc), permanent=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Connection refused or dropped, timeouts: the relay may be back later.
            raise DeliveryFailed(
                "smtp_unavailable", f"{type(exc).__name__}: {exc}", permanent=False
            ) from exc
        # Some recipients may have been refused while others were accepted: the message went
        # out, so it is delivered (retrying would send it again to those who have it), and the
        # refusals are on record.
        return {
            "message_id": message["Message-ID"],
            "reply": reply[:500],
            "refused": {address: r.code for address, r in refused.items()},
        }

    async def aclose(self) -> None:
        """Every delivery opens and closes its own connection; nothing is pooled."""
