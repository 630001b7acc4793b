"""Delivery to webhook, email, MQTT, log file and local command. Secrets never reach logs.

Machine channels send the payload as JSON whatever its kind; what a person
reads (log line, e-mail, MQTT topic) comes from ``render``, which knows an
inspection alert from a system event such as ``disk_low``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import smtplib
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from inspectd.alerts.render import log_line, render, topic_fields
from inspectd.config import CommandChannel, EmailChannel, LogChannel, MqttChannel, WebhookChannel
from inspectd.file_modes import make_dirs, open_private

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
        raise DeliveryError(f"cannot read secret file {path} ({exc.strerror or exc})") from None


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
    log.warning("%s", log_line(payload))
    if channel.path is not None:
        try:
            make_dirs(channel.path.parent)  # 0750 folders, a 0640 file: alerts name parts and cameras
            with os.fdopen(open_private(channel.path), "a", encoding="utf-8") as handle:
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


def email_message(channel: EmailChannel, delivery: Delivery) -> EmailMessage:
    text = render(delivery.payload)
    message = EmailMessage()
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message["Subject"] = f"[inspectd] {text.headline}"
    message["Message-ID"] = f"<{delivery.idempotency_key}@inspectd>"
    message["X-Inspectd-Idempotency-Key"] = delivery.idempotency_key
    message.set_content("\n".join(text.body) + "\n")
    return message


def send_email(channel: EmailChannel, delivery: Delivery) -> None:
    message = email_message(channel, delivery)
    try:
        if channel.security == "ssl":
            client = smtplib.SMTP_SSL(channel.host, channel.port, timeout=channel.timeout_s,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s)
        with client:
            if channel.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if channel.username:
                password = _read_secret(channel.password_file).decode() if channel.password_file else ""
                client.login(channel.username, password)
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {channel.host}:{channel.port}: {exc}") from None


def send_mqtt(channel: MqttChannel, delivery: Delivery) -> None:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise DeliveryError("the mqtt channel needs paho-mqtt (pip install paho-mqtt)") from None
    payload = delivery.payload
    topic = channel.topic.format(**topic_fields(payload))
    body = json.dumps({"idempotency_key": delivery.idempotency_key, **payload}, sort_keys=True).encode()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"inspectd-{delivery.idempotency_key[:16]}")
    if channel.username:
        password = _read_secret(channel.password_file).decode() if channel.password_file else None
        client.username_pw_set(channel.username, password)
    if channel.tls:
        client.tls_set()
    try:
        client.connect(channel.host, channel.port, keepalive=max(5, int(channel.timeout_s)))
        client.loop_start()
        try:
            info = client.publish(topic, body, qos=channel.qos)
            info.wait_for_publish(timeout=channel.timeout_s)
            if not info.is_published():
                raise DeliveryError(f"MQTT {channel.host}:{channel.port}: not acknowledged within {channel.timeout_s} s")
        finally:
            client.disconnect()
            client.loop_stop()
    except (OSError, ValueError, RuntimeError) as exc:
        raise DeliveryError(f"MQTT {channel.host}:{channel.port}: {exc}") from None


def send(channel, delivery: Delivery) -> None:
    if isinstance(channel, WebhookChannel):
        send_webhook(channel, delivery)
    elif isinstance(channel, LogChannel):
        send_log(channel, delivery)
    elif isinstance(channel, EmailChannel):
        send_email(channel, delivery)
    elif isinstance(channel, MqttChannel):
        send_mqtt(channel, delivery)
    else:
        send_command(channel, delivery)
