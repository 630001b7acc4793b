"""``inspectd doctor``: check a deployment before (or while) it runs.

Reads only: it never loads model weights, migrates the store or sends an
alert. Webhooks are checked by opening a TCP connection to their host.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from inspectd.config import CommandChannel, EmailChannel, LogChannel, MqttChannel, Settings, WebhookChannel


@dataclass(frozen=True)
class Check:
    status: str  # ok | warn | FAIL
    name: str
    detail: str


def _writable_dir(path: Path) -> tuple[bool, str]:
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return False, f"{probe} is not writable by uid {os.geteuid()}"
    return True, "writable" if probe == path else f"will be created under {probe}"


def _systemd_credential(path: Path) -> bool:
    """A credential path of a unit, looked at from outside that unit (where it does not exist)."""
    inside = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(path).is_relative_to("/run/credentials") and not (inside and Path(path).is_relative_to(inside))


def check_bundle(settings: Settings) -> list[Check]:
    from inspectd.bundle.files import verify_bundle
    from inspectd.bundle.load import resolve_device
    from inspectd.errors import BundleError

    checks = []
    try:
        manifest = verify_bundle(settings.model.bundle)
        checks.append(Check("ok", "bundle", f"{manifest.name} ({manifest.quantization}), {len(manifest.files)} files "
                                            "match their sha256"))
        if manifest.quantization == "nf4":
            try:
                import bitsandbytes  # noqa: F401

                checks.append(Check("ok", "bitsandbytes", "installed (needed for this 4-bit bundle)"))
            except ImportError:
                checks.append(Check("FAIL", "bitsandbytes", "not installed; pip install 'inspectd[gpu]'"))
    except BundleError as exc:
        checks.append(Check("FAIL", "bundle", str(exc)))
    try:
        import torch

        device = resolve_device(settings.model.device)
        detail = str(device)
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            detail += f": {torch.cuda.get_device_name(device)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
        checks.append(Check("ok", "device", detail))
    except BundleError as exc:
        checks.append(Check("FAIL", "device", str(exc)))
    return checks


def check_folders(settings: Settings) -> list[Check]:
    checks = []
    for folder in settings.watch.folders:
        path = folder.path
        if path.is_dir():
            ok = os.access(path, os.R_OK | os.W_OK | os.X_OK)
            checks.append(Check("ok" if ok else "FAIL", f"watch {folder.camera}",
                                f"{path} {'readable and writable' if ok else 'needs read, write and execute access'}"))
        else:
            ok, why = _writable_dir(path)
            checks.append(Check("warn" if ok else "FAIL", f"watch {folder.camera}", f"{path} missing; {why}"))
    if not settings.watch.folders:
        checks.append(Check("warn", "watch", "no watch.folders: 'inspectd run' will refuse to start"))
    for label, path in (("archive", settings.archive.folder), ("failed", settings.archive.failed_folder)):
        if settings.archive.mode == "keep":
            break
        ok, why = _writable_dir(path)
        checks.append(Check("ok" if ok else "FAIL", label, f"{path}: {why}"))
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
        checks.append(Check("ok", "inotify", f"max_user_watches = {limit}"))
    except OSError:
        if settings.watch.observer == "inotify":
            checks.append(Check("warn", "inotify", "no inotify here; use watch.observer: polling"))
    return checks


def check_store(settings: Settings) -> list[Check]:
    from inspectd.errors import InspectdError
    from inspectd.store.database import current_revision, head_revision, open_engine

    try:
        engine = open_engine(settings.store.url, create=False)
        revision = current_revision(engine)
    except InspectdError as exc:
        folder = Path(settings.store.url.replace("sqlite:///", "", 1)).parent
        ok, why = _writable_dir(folder) if settings.store.url.startswith("sqlite:///") else (False, str(exc))
        detail = f"{exc}; the daemon creates it at its first start (folder {folder}: {why})"
        return [Check("warn" if ok else "FAIL", "store", detail if ok else f"{exc}; folder {folder}: {why}")]
    except Exception as exc:  # driver errors: unreachable server, bad credentials
        return [Check("FAIL", "store", f"cannot connect: {exc}")]
    url = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    head = head_revision()
    if revision == head:
        return [Check("ok", "store", f"{url} at schema {revision}")]
    return [Check("warn", "store", f"{url} at schema {revision or 'none'}; {head} is applied when the daemon starts")]


def check_alerts(settings: Settings, timeout_s: float = 3.0) -> list[Check]:
    checks = []

    def reachable(name: str, host: str, port: int) -> Check:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
            return Check("ok", name, f"{host}:{port} accepts connections")
        except OSError as exc:
            return Check("FAIL", name, f"{host}:{port} unreachable ({exc}); alerts will queue until it is")

    for channel in settings.alerts.channels:
        name = f"alert channel {channel.name}"
        secret = getattr(channel, "secret_file", None) or getattr(channel, "password_file", None)
        if secret is not None and _systemd_credential(secret):
            checks.append(Check("ok", name, f"secret {secret} is a systemd credential (LoadCredential=): systemd "
                                            "checks it when the service starts; it exists only inside the service"))
        elif secret is not None and not os.access(secret, os.R_OK):
            checks.append(Check("FAIL", name, f"secret file {secret} is not readable"))
        if isinstance(channel, WebhookChannel):
            parts = urlsplit(channel.url)
            checks.append(reachable(name, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
        elif isinstance(channel, (EmailChannel, MqttChannel)):
            checks.append(reachable(name, channel.host, channel.port))
        elif isinstance(channel, LogChannel):
            if channel.path is None:
                checks.append(Check("ok", name, "daemon log only"))
            else:
                ok, why = _writable_dir(channel.path.parent)
                checks.append(Check("ok" if ok else "FAIL", name, f"{channel.path}: {why}"))
        elif isinstance(channel, CommandChannel):
            found = shutil.which(channel.argv[0])
            checks.append(Check("ok" if found else "FAIL", name,
                                f"{found} is executable" if found else f"{channel.argv[0]} not found or not executable"))
    if not settings.alerts.rules:
        checks.append(Check("warn", "alerts", "no alert rules: anomalies are recorded but nobody is told"))
    return checks


def diagnose(settings: Settings) -> list[Check]:
    return [
        Check("ok", "config", f"{settings.source} is valid"),
        *check_bundle(settings),
        *check_folders(settings),
        *check_store(settings),
        *check_alerts(settings),
    ]
