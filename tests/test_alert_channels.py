"""Each alert channel against a real receiver on loopback: SMTP, MQTT, HTTP, a process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import pwd
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from inspectd.alerts.channels import Delivery, DeliveryError, send
from inspectd.config import AlertSettings
from tests.conftest import REPO
from tests.daemon_harness import Receiver

PAYLOAD = {"inspection_id": 7, "rule": "defect", "camera": "line1", "verdict": "anomalous", "score": 0.91,
           "source_path": "/srv/drop/a.png"}


def _channel(spec: dict):
    return AlertSettings.model_validate({"channels": [spec]}).channels[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def smtp_inbox():
    """A real SMTP server on loopback (aiosmtpd): its port, and each message received with its envelope."""
    import email
    import email.policy
    from types import SimpleNamespace

    aiosmtpd = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd is in the test extra")
    messages: list[SimpleNamespace] = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
            messages.append(SimpleNamespace(
                sender=envelope.mail_from, recipients=envelope.rcpt_tos, raw=envelope.content.decode(),
                mail=email.message_from_bytes(envelope.content, policy=email.policy.default)))
            return "250 OK"

    port = _free_port()
    controller = aiosmtpd.Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, messages
    controller.stop()


def test_email_reaches_a_real_smtp_server(smtp_inbox):
    port, messages = smtp_inbox
    channel = _channel({"type": "email", "name": "ops", "host": "127.0.0.1", "port": port, "security": "none",
                        "sender": "inspectd@plant.example", "recipients": ["qa@plant.example", "line@plant.example"]})
    send(channel, Delivery("key-123", PAYLOAD))
    assert len(messages) == 1
    sender, recipients, content = messages[0].sender, messages[0].recipients, messages[0].raw
    assert sender == "inspectd@plant.example" and recipients == ["qa@plant.example", "line@plant.example"]
    assert "Subject: [inspectd] anomalous on line1 (score 0.910)" in content
    assert "X-Inspectd-Idempotency-Key: key-123" in content and "source_path: /srv/drop/a.png" in content
    dead = _channel({"type": "email", "name": "ops", "host": "127.0.0.1", "port": _free_port(), "security": "none",
                     "sender": "a@b.c", "recipients": ["d@e.f"], "timeout_s": 2})
    with pytest.raises(DeliveryError, match="SMTP 127.0.0.1"):
        send(dead, Delivery("k", PAYLOAD))


@pytest.fixture()
def mosquitto():
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if binary is None:
        pytest.skip("mosquitto is not installed (.ci/run installs it from Debian's packages)")
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="mosquitto-"))
    (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    os.chmod(folder, 0o755)
    proc = subprocess.Popen([binary, "-c", str(folder / "mosquitto.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_mqtt_publishes_to_a_real_broker(mosquitto):
    import paho.mqtt.client as mqtt

    received = []
    subscribed = threading.Event()
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe("inspectd/#", qos=1)
    subscriber.on_subscribe = lambda *a: subscribed.set()
    subscriber.on_message = lambda c, u, m: received.append((m.topic, json.loads(m.payload)))
    subscriber.connect("127.0.0.1", mosquitto)
    subscriber.loop_start()
    try:
        assert subscribed.wait(10)
        channel = _channel({"type": "mqtt", "name": "scada", "host": "127.0.0.1", "port": mosquitto})
        send(channel, Delivery("key-456", PAYLOAD))
        deadline = time.time() + 10
        while not received and time.time() < deadline:
            time.sleep(0.05)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    assert received == [("inspectd/line1/alerts", {"idempotency_key": "key-456", **PAYLOAD})]
    dead = _channel({"type": "mqtt", "name": "scada", "host": "127.0.0.1", "port": _free_port(), "timeout_s": 2})
    with pytest.raises(DeliveryError, match="MQTT 127.0.0.1"):
        send(dead, Delivery("k", PAYLOAD))


def test_command_channel_gets_json_on_stdin_without_a_shell(tmp_path):
    out = tmp_path / "got.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    send(_channel({"type": "command", "name": "siren", "argv": [sys.executable, "-c", script]}), Delivery("k1", PAYLOAD))
    assert json.loads(out.read_text()) == PAYLOAD
    failing = _channel({"type": "command", "name": "siren", "argv": [sys.executable, "-c", "import sys; sys.exit(3)"]})
    with pytest.raises(DeliveryError, match="exited 3"):
        send(failing, Delivery("k2", PAYLOAD))
    # Shell syntax is passed through literally, never interpreted.
    literal = _channel({"type": "command", "name": "x", "argv": ["/bin/echo", "$(touch pwned)", ";", "rm"]})
    send(literal, Delivery("k3", PAYLOAD))
    assert not Path("pwned").exists()


def test_webhook_error_status_and_log_file(tmp_path):
    receiver = Receiver()
    receiver.failing = True
    try:
        with pytest.raises(DeliveryError, match="HTTP 503"):
            send(_channel({"type": "webhook", "name": "h", "url": receiver.url}), Delivery("k", PAYLOAD))
    finally:
        receiver.close()
    log_file = tmp_path / "alerts.jsonl"
    send(_channel({"type": "log", "name": "l", "path": str(log_file)}), Delivery("k9", PAYLOAD))
    assert json.loads(log_file.read_text()) == {"idempotency_key": "k9", **PAYLOAD}


def test_secret_never_reaches_logs_or_payload(tmp_path, caplog):
    receiver = Receiver(secret=b"topsecret")
    (tmp_path / "secret").write_text("topsecret")
    try:
        channel = _channel({"type": "webhook", "name": "h", "url": receiver.url, "secret_file": str(tmp_path / "secret")})
        send(channel, Delivery("k", PAYLOAD))
    finally:
        receiver.close()
    assert receiver.received[0]["signature_ok"]
    assert "topsecret" not in json.dumps(receiver.received[0]["payload"]) and "topsecret" not in caplog.text


def test_doctor_reports_what_is_wrong(random_bundle, tmp_path):
    import yaml

    receiver = Receiver()
    config = {
        "model": {"bundle": str(random_bundle), "device": "cpu"},
        "watch": {"folders": [{"path": str(tmp_path / "drop"), "camera": "c1"}]},
        "store": {"url": f"sqlite:///{tmp_path / 'var' / 'x.db'}"},
        "alerts": {
            "channels": [
                {"type": "webhook", "name": "up", "url": receiver.url},
                {"type": "webhook", "name": "down", "url": f"http://127.0.0.1:{_free_port()}/x"},
                {"type": "command", "name": "siren", "argv": ["/nonexistent/siren"]},
                {"type": "webhook", "name": "cred", "url": receiver.url,
                 "secret_file": "/run/credentials/inspectd.service/webhook-secret"},
            ],
            "rules": [{"name": "r", "channels": ["up"]}],
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        # the service user pinned to this one: on a box with an inspectd user, pytest's 0700 folders are not its
        done = subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(path), "doctor",
                               "--service-user", pwd.getpwuid(os.getuid()).pw_name],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    finally:
        receiver.close()
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert any(line.startswith("ok    bundle: tiny-random") for line in lines)
    from inspectd.bundle.files import verify_bundle

    digest = verify_bundle(random_bundle).digest
    assert any(line.startswith("ok    bundle: tiny-random") and f"digest {digest}" in line for line in lines), \
        "doctor shows the bundle digest the store records"
    assert any(line.startswith("ok    alert channel up:") for line in lines)
    assert any(line.startswith("FAIL  alert channel down:") and "unreachable" in line for line in lines)
    assert any(line.startswith("FAIL  alert channel siren:") for line in lines)
    assert any(line.startswith("warn  store:") and "creates it at its first start" in line for line in lines)
    assert any(line.startswith("ok    alert channel cred:") and "systemd checks it" in line for line in lines), \
        "a credential of the unit is not a failure outside the unit"
    assert not [line for line in lines if "does not exist" in line and "; exists" in line]
    assert lines[-1].endswith("checks: 2 failed, 2 warnings")


# --- System events (issue 28 item 6): each channel renders a disk event with its own fields ---------------------

def _disk_event(paused: bool = True) -> dict:
    """A disk guard alert's payload as the daemon queues it (the guard's change, the outbox's payload)."""
    from datetime import datetime

    from inspectd.alerts.outbox import system_payload
    from inspectd.daemon.disk_guard import GuardChange, SpaceReading

    change = GuardChange(paused, (SpaceReading(Path("/var/lib/inspectd"), 12 * 2**20),), 64 * 2**20)
    return system_payload("disk_low" if paused else "disk_ok", change.details(), datetime(2026, 12, 6, 8, 30))


def test_log_channel_renders_a_disk_event_with_its_own_fields(tmp_path, caplog):
    event = _disk_event()
    log_file = tmp_path / "alerts.jsonl"
    channel = _channel({"type": "log", "name": "l", "path": str(log_file)})
    with caplog.at_level("WARNING", logger="inspectd.alerts"):
        send(channel, Delivery("k-disk", event))
        send(channel, Delivery("k-part", PAYLOAD))
    disk_line, part_line = [r.getMessage() for r in caplog.records if r.name == "inspectd.alerts"]
    assert "None" not in disk_line, disk_line
    assert disk_line.startswith("EVENT disk_low: intake paused") and "/var/lib/inspectd: 12 MiB free" in disk_line \
        and "floor 64 MiB" in disk_line, disk_line
    assert part_line == "ALERT defect: line1 anomalous score=0.91 (/srv/drop/a.png)", "inspection alerts unchanged"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines == [{"idempotency_key": "k-disk", **event}, {"idempotency_key": "k-part", **PAYLOAD}]
    resumed = _disk_event(paused=False)
    with caplog.at_level("WARNING", logger="inspectd.alerts"):
        send(channel, Delivery("k-ok", resumed))
    assert caplog.records[-1].getMessage().startswith("EVENT disk_ok: intake resumed")
    with caplog.at_level("WARNING", logger="inspectd.alerts"):  # an event kind the renderer has no words for
        send(channel, Delivery("k-new", {"event": "model_died", "created_at": "2026-12-06T08:30:00.000Z",
                                         "exit_code": -9}))
    assert caplog.records[-1].getMessage().startswith("EVENT model_died: exit_code=-9"), caplog.records[-1].getMessage()


def test_email_renders_a_disk_event_with_its_own_subject_and_body(smtp_inbox):
    port, messages = smtp_inbox
    channel = _channel({"type": "email", "name": "ops", "host": "127.0.0.1", "port": port, "security": "none",
                        "sender": "inspectd@plant.example", "recipients": ["qa@plant.example"]})
    send(channel, Delivery("key-disk", _disk_event()))
    send(channel, Delivery("key-part", PAYLOAD))
    disk, part = (message.mail for message in messages)
    assert disk["Subject"].startswith("[inspectd] disk_low: intake paused"), disk["Subject"]
    assert "None" not in disk["Subject"] and "12 MiB free" in disk["Subject"]
    body = disk.get_content()
    assert "None" not in body and "free_bytes /var/lib/inspectd: 12582912" in body and "floor_bytes: 67108864" in body
    assert disk["X-Inspectd-Idempotency-Key"] == "key-disk"
    assert part["Subject"] == "[inspectd] anomalous on line1 (score 0.910)", "inspection alerts unchanged"
    assert "source_path: /srv/drop/a.png" in part.get_content()


def test_mqtt_publishes_a_disk_event_to_a_topic_of_its_own(mosquitto):
    import paho.mqtt.client as mqtt

    received = []
    subscribed = threading.Event()
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber-events")
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe([("inspectd/#", 1), ("plant/#", 1)])
    subscriber.on_subscribe = lambda *a: subscribed.set()
    subscriber.on_message = lambda c, u, m: received.append((m.topic, json.loads(m.payload)))
    subscriber.connect("127.0.0.1", mosquitto)
    subscriber.loop_start()
    event = _disk_event()
    try:
        assert subscribed.wait(10)
        send(_channel({"type": "mqtt", "name": "scada", "host": "127.0.0.1", "port": mosquitto}),
             Delivery("key-disk", event))
        send(_channel({"type": "mqtt", "name": "scada", "host": "127.0.0.1", "port": mosquitto,
                       "topic": "plant/{camera}/{rule}"}), Delivery("key-disk2", event))
        deadline = time.time() + 10
        while len(received) < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    # "_system" cannot be a camera's name (cameras start with a letter or digit); the event fills {rule}
    assert sorted(received, key=lambda r: r[0]) == [("inspectd/_system/alerts", {"idempotency_key": "key-disk", **event}),
                                                    ("plant/_system/disk_low", {"idempotency_key": "key-disk2", **event})]


def test_webhook_and_command_carry_a_disk_event_as_its_own_json(tmp_path):
    event = _disk_event()
    receiver = Receiver()
    try:
        send(_channel({"type": "webhook", "name": "h", "url": receiver.url}), Delivery("k-disk", event))
    finally:
        receiver.close()
    (got,) = receiver.received
    assert got["key"] == "k-disk" and got["payload"] == event
    assert got["payload"]["event"] == "disk_low" and not {"verdict", "score", "camera"} & set(got["payload"])
    out = tmp_path / "got.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    send(_channel({"type": "command", "name": "siren", "argv": [sys.executable, "-c", script]}), Delivery("k", event))
    assert json.loads(out.read_text()) == event
    assert event["free_bytes"] == {"/var/lib/inspectd": 12 * 2**20} and event["floor_bytes"] == 64 * 2**20
    assert event["host"] == socket.gethostname(), "several boxes may share a channel: the event names its box"
