"""Delivery to webhook, log file and local command. Secrets never reach logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from inspectd.config import CommandChannel, LogChannel, WebhookChannel

log = logging.getLogger("inspectd.alerts")

SIGNATURE_HEADER = "X-Inspectd-Signature"
KEY_HEADER = "Idempotency-Key"


class DeliveryError(Exception):
    """Sending failed; the relay retries later."""


@dataclass(frozen=True)
class Delivery:
    idempotency_key: str
    payload: dict

    def body(self) -> bytes:
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _read_secret(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise DeliveryError(f"cannot read webhook secret file {path} ({exc.strerror or exc})") from None


def send_webhook(channel: WebhookChannel, delivery: Delivery) -> None:
    body = delivery.body()
    headers = {"Content-Type": "application/json", KEY_HEADER: delivery.idempotency_key, "User-Agent": "inspectd"}
    if channel.secret_file is not None:
        headers[SIGNATURE_HEADER] = sign(_read_secret(channel.secret_file), body)
    request = urllib.request.Request(channel.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=channel.timeout_s) as response:
            if not 200 <= response.status < 300:
                raise DeliveryError(f"HTTP {response.status} from {channel.url}")
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} from {channel.url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach {channel.url}: {reason}") from None


def send_log(channel: LogChannel, delivery: Delivery) -> None:
    payload = delivery.payload
    log.warning(
        "ALERT %s: %s %s score=%s (%s)",
        payload.get("rule"), payload.get("camera"), payload.get("verdict"), payload.get("score"), payload.get("source_path"),
    )
    if channel.path is not None:
        try:
            channel.path.parent.mkdir(parents=True, exist_ok=True)
            with channel.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"idempotency_key": delivery.idempotency_key, **payload}) + "\n")
        except OSError as exc:
            raise DeliveryError(f"cannot append to {channel.path}: {exc.strerror or exc}") from None


def send_command(channel: CommandChannel, delivery: Delivery) -> None:
    try:
        done = subprocess.run(
            list(channel.argv), input=delivery.body(), capture_output=True, timeout=channel.timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeliveryError(f"command {channel.argv[0]} failed to run: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()[-200:]
        raise DeliveryError(f"command {channel.argv[0]} exited {done.returncode}: {tail}")


def send(channel: WebhookChannel | LogChannel | CommandChannel, delivery: Delivery) -> None:
    if isinstance(channel, WebhookChannel):
        send_webhook(channel, delivery)
    elif isinstance(channel, LogChannel):
        send_log(channel, delivery)
    else:
        send_command(channel, delivery)
