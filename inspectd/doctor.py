"""``inspectd doctor``: check a deployment before (or while) it runs.

Reads only: it never loads model weights, migrates the store or sends an
alert. Webhooks are checked by opening a TCP connection to their host.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
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
                                            f"match their sha256, bundle.json its digest; digest {manifest.digest} "
                                            "(what each inspection's bundle row records)"))
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


@dataclass(frozen=True)
class Reader:
    """Whose read access is checked: a user, its uid and every group it is in (as its processes get them)."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def of_user(cls, name: str) -> Reader:
        """``name``'s uid and groups from the user and group databases; KeyError when there is no such user."""
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)))

    @property
    def primary_group(self) -> str:
        return _group_name(pwd.getpwnam(self.name).pw_gid)


def default_service_user() -> str:
    """The user whose access doctor checks when ``--service-user`` is not given.

    As root: the unit's ``User=inspectd`` when that user exists, since root
    reads everything and checking root would prove nothing. Otherwise whoever
    runs doctor (they run the daemon by hand, as in the tests and demos).
    """
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("inspectd")
            return "inspectd"
        except KeyError:
            pass
    return pwd.getpwuid(os.geteuid()).pw_name


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _may(info: os.stat_result, reader: Reader, want: int) -> bool:
    """Whether ``reader`` has the ``want`` bits (4 read, 1 execute/search) on a file with this stat.

    The kernel's rule without ACLs: the owner's bits if the reader owns it,
    else the group's bits if the file's group is one of the reader's, else
    the others' bits (one class only: an owner without a bit does not fall
    through to the group's). Root may read and search anything.
    """
    if reader.uid == 0:
        return True
    if info.st_uid == reader.uid:
        bits = info.st_mode >> 6
    elif info.st_gid in reader.gids:
        bits = info.st_mode >> 3
    else:
        bits = info.st_mode
    return bits & want == want


def _describe(path: Path, info: os.stat_result) -> str:
    return (f"{path} (owner {_user_name(info.st_uid)}, group {_group_name(info.st_gid)}, "
            f"mode {info.st_mode & 0o7777:04o})")


@dataclass(frozen=True)
class Unreadable:
    """One path the reader cannot get at, described with its owner, group and mode, and how to fix it."""

    detail: str
    fix: str | None = None  # None: the fix of the whole tree (chgrp -R; chmod -R g+rX)


def unreadable_paths(path: Path, reader: Reader) -> tuple[list[Unreadable], int]:
    """What keeps ``reader`` from reading ``path`` (a file, or a folder and everything in it).

    Computed from stat, not by trying: doctor runs as root, which could read
    everything. Folders above ``path`` need search (x), folders in it read and
    search, files read. Returns the problems (folders above first, then the
    tree in sorted order) and how many files were looked at.
    """
    path = Path(path).resolve()
    problems = []
    for folder in reversed(path.parents):
        try:
            info = folder.stat()
        except OSError as exc:
            problems.append(Unreadable(f"{folder} ({exc.strerror})"))
            continue
        if not _may(info, reader, 1):
            problems.append(Unreadable(f"{_describe(folder, info)}: cannot be entered (no x for {reader.name})",
                                       f"chmod o+x {folder}, or give it a group of {reader.name}'s and g+x"))
    entries = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
    files = 0
    for entry in entries:
        try:
            info = entry.stat()
        except OSError as exc:
            problems.append(Unreadable(f"{entry} ({exc.strerror})"))
            continue
        is_folder = stat.S_ISDIR(info.st_mode)
        files += not is_folder
        if not _may(info, reader, 5 if is_folder else 4):
            problems.append(Unreadable(f"{_describe(entry, info)}: not "
                                       f"{'readable and searchable' if is_folder else 'readable'}"))
    return problems, files


def check_readable(name: str, path: Path, reader: Reader, fix: str) -> Check:
    """FAIL naming the first path ``reader`` cannot read and its fix; ok with how many files it can read."""
    problems, files = unreadable_paths(path, reader)
    if not problems:
        as_root = " (root reads anything: --service-user NAME checks the service's user)" if reader.uid == 0 else ""
        return Check("ok", name, f"{path}: {files} file{'s' * (files != 1)} readable by {reader.name}{as_root}")
    first = problems[0]
    more = f" ({len(problems) - 1} more paths)" if len(problems) > 1 else ""
    return Check("FAIL", name, f"{reader.name} cannot read {first.detail}{more}; fix: {first.fix or fix}")


def check_access(settings: Settings, service_user: str | None = None) -> list[Check]:
    """Can the service's user read the bundle (and the config file)?

    A bundle exported by root used to be folder 0700 / weights 0600: doctor
    as root said ok and the service (``User=inspectd``) could not load it.
    A missing bundle is check_bundle's failure, not counted twice here.
    """
    user = service_user or default_service_user()
    try:
        reader = Reader.of_user(user)
    except KeyError:
        return [Check("FAIL", "service user", f"no user named {user!r} on this machine (--service-user)")]
    group = reader.primary_group
    checks = []
    bundle = settings.model.bundle
    if bundle.is_dir():
        checks.append(check_readable("bundle access", bundle, reader, f"chgrp -R {group} {bundle}; "
                                     f"chmod -R g+rX {bundle} (or export it with --group {group})"))
    config = settings.source
    if config is not None and config.is_file():
        checks.append(check_readable("config access", config, reader, f"chgrp {group} {config}; chmod g+r {config}"))
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


def diagnose(settings: Settings, service_user: str | None = None) -> list[Check]:
    """Every check; ``service_user``: whose read access to the bundle is checked (default_service_user)."""
    return [
        Check("ok", "config", f"{settings.source} is valid"),
        *check_bundle(settings),
        *check_access(settings, service_user),
        *check_folders(settings),
        *check_store(settings),
        *check_alerts(settings),
    ]
