"""Typed, validated settings from one YAML file.

Unknown keys, wrong types and missing paths are refused at start with the
file, the key path and what was expected, so a typo never silently falls back
to a default on a production line. Relative paths are resolved against the
folder of the YAML file, so a config and its bundle can move together.
"""

from __future__ import annotations

import os

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from inspectd.config_folders import Place, check_apart, sqlite_file
from inspectd.errors import ConfigError
from inspectd.verdict import Verdict
from inspectd.real.params import RealParams
from inspectd.strict_model import StrictModel

ModelT = TypeVar("ModelT", bound=BaseModel)


def _check_device(value: str) -> str:
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")


class ChallengerSettings(StrictModel):
    """A second bundle that inspects the line's parts in the shadow: its results are stored beside the champion's
    (``challenger_results``), never alerted on, never moving a file or changing an inspection row."""

    bundle: Path = Field(description="the challenger's bundle folder (bundle.json inside); relative paths follow "
                                     "the config file, as model.bundle")
    mode: Literal["idle", "sampled"] = Field(
        "idle", description="idle: inspect only while the champion has no file queued or in flight (the line's "
                            "throughput is kept; a busy line leaves parts uninspected); sampled: a fixed share of "
                            "the parts, chosen by their sha256, inspected even while the champion is busy")
    sample_fraction: float = Field(0.1, gt=0, le=1, description="share of the parts the challenger inspects in "
                                                                "sampled mode (the same parts on every run)")
    device: str | None = Field(None, description="auto, cpu, cuda or cuda:N; null = model.device")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        return None if value is None else _check_device(value)


class ModelSettings(StrictModel):
    bundle: Path = Field(description="model bundle folder (bundle.json inside)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    batch_size: int = Field(4, ge=1, le=256, description="images per batch; rows per generate call (a bundle "
                                                         "scoring mirror views makes each image that many rows)")
    max_new_tokens: int | None = Field(None, ge=8, le=4096, description="null = the bundle's value")
    threads: int = Field(1, ge=1, le=256, description="torch CPU threads; 1 stays fast when other processes "
                                                      "share the cores (more collapsed 20-70x)")
    canary_image: Path | None = Field(None, description="image a reloaded bundle must inspect before it is used "
                                                         "(null = a plain grey image)")
    canary_verdict: Verdict | None = Field(
        None, description="verdict the canary image must get: normal or anomalous (null = any verdict whose reply "
                          "parses)")
    challenger: ChallengerSettings | None = Field(None, description="a candidate bundle measured on the line's "
                                                                     "parts in the shadow of this one (null = none)")

    @field_validator("canary_verdict")
    @classmethod
    def _canary(cls, value: Verdict | None) -> Verdict | None:
        if value not in (None, Verdict.NORMAL, Verdict.ANOMALOUS):
            raise ValueError(f"a canary is judged normal or anomalous, not {value.value}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return _check_device(value)


class _Overrides(StrictModel):
    def apply(self, base: RealParams) -> RealParams:
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        return RealParams.model_validate({**base.model_dump(), **changes})


def _optional(model: type[StrictModel]) -> dict:
    """Every field of ``model``, its constraints and description kept, optional (None = the bundle's value)."""
    return {name: (info.annotation | None, FieldInfo.merge_field_infos(info, default=None))
            for name, info in model.model_fields.items()}


# Any ReAL parameter set here replaces the bundle's value. Made from RealParams, so a parameter is defined
# once: one added there (map_scaling, ignored_words) can be overridden here without a second list to forget.
RealOverrides = create_model("RealOverrides", __base__=_Overrides, **_optional(RealParams))


class ImageSettings(StrictModel):
    max_pixels: int = Field(40_000_000, ge=1, description="refuse larger images (decompression bombs)")
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1, description="refuse larger files")


DEFAULT_IGNORE = (".*", "*~", "*.tmp", "*.temp", "*.part", "*.partial", "*.swp", "*.crdownload", "*.filepart")


class WatchedFolder(StrictModel):
    path: Path
    camera: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class WatchSettings(StrictModel):
    folders: tuple[WatchedFolder, ...] = ()
    observer: Literal["inotify", "polling"] = Field("inotify", description="polling for NFS/SMB shares")
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    stable_s: float = Field(1.0, ge=0, le=600, description="size and mtime unchanged this long before reading")
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE
    reconcile_interval_s: float = Field(60.0, ge=1, description="rescan folders for files whose events were lost")


class QueueSettings(StrictModel):
    capacity: int = Field(256, ge=1, le=100_000, description="files waiting for the model")
    max_wait_ms: int = Field(0, ge=0, le=60_000, description="wait this long to fill a batch; 0 = take what is queued")


class MetricsSettings(StrictModel):
    enabled: bool = Field(False, description="serve Prometheus metrics and /healthz over HTTP")
    address: str = Field("127.0.0.1", description="listen address; 127.0.0.1 keeps it on the box")
    port: int = Field(9464, ge=1, le=65535)


class ConsoleSettings(StrictModel):
    """``inspectd serve``: the engineers' web console over the store."""

    address: str = Field("127.0.0.1", description="listen address; anything but loopback needs users_file")
    port: int = Field(8780, ge=1, le=65535)
    users_file: Path | None = Field(None, description="'name:scrypt$...' lines (inspectd console-user NAME); "
                                                        "required off loopback, no default user or password")
    time_zone: str = Field("UTC", description="IANA zone for days and shifts in the stats, e.g. Europe/Berlin")
    shifts: tuple[int, ...] = Field((6, 14, 22), description="hours (local) at which shifts start")
    page_size: int = Field(50, ge=1, le=500)
    allowed_hosts: tuple[str, ...] = Field(
        (), description="host names (or IP addresses) the console answers to besides the loopback names "
                        "(127.0.0.1, localhost, [::1]) and the listen address, which are always allowed; a request "
                        "naming any other Host gets 400, so a page on another site cannot reach the console through "
                        "DNS rebinding. Set the name engineers type (console.plant.example, or *.plant.example) when "
                        "listening off loopback or behind a reverse proxy")
    max_connections: int = Field(200, ge=2, le=10_000, description="open connections at most (uvicorn's "
                                 "limit_concurrency): past it the longest idle connection is closed, or a 503 answered "
                                 "when every one is busy; keep it well under the unit's LimitNOFILE")
    request_timeout_s: float = Field(10.0, gt=0, le=300, description="seconds a connection has to send a request's "
                                     "headers and body; an idle or slow client is disconnected after it")
    login_failures: int = Field(10, ge=1, le=10_000, description="failed logins allowed per client address within "
                                "login_window_s; past them the address gets 429 (Retry-After) without a password check")
    login_window_s: float = Field(300.0, gt=0, le=86_400, description="the window of login_failures: one more try is "
                                  "allowed every login_window_s / login_failures seconds")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress
        import re

        hosts = []
        for raw in value:
            host = raw.strip().lower()
            try:
                if ipaddress.ip_address(host.strip("[]")).version == 6:
                    host = f"[{host.strip('[]')}]"  # a Host header names an IPv6 address in brackets
            except ValueError:
                label = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
                if not re.fullmatch(rf"(\*\.)?{label}(\.{label})*", host):
                    raise ValueError(f"allowed_hosts: {raw!r} is not a host name, *.domain or IP address (no scheme, "
                                     "port or bare *)") from None
            hosts.append(host)
        return tuple(hosts)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 0 <= h < 24 for h in value) or list(value) != sorted(set(value)):
            raise ValueError("shifts: ascending distinct hours 0-23, at least one")
        return value


class ArchiveSettings(StrictModel):
    mode: Literal["move", "keep"] = "move"
    folder: Path = Path("archive")
    failed_folder: Path = Path("failed")


class StoreSettings(StrictModel):
    url: str = Field("sqlite:///inspectd.db", description="SQLAlchemy URL; relative SQLite paths follow the config file")
    save_maps: bool = True


class RetentionSettings(StrictModel):
    """Nothing is removed unless a budget is set here."""

    maps_days: float | None = Field(None, gt=0, description="delete map/mask PNGs of inspections older than this")
    rows_days: float | None = Field(None, gt=0, description="delete inspections (with their maps and alerts) older "
                                                            "than this; reviewed ones are kept as tombstones")
    archive_days: float | None = Field(None, gt=0, description="delete the archived and failed files inspectd put "
                                                                "there (the store names them) older than this")
    archive_max_gb: float | None = Field(None, gt=0, description="delete the oldest days of inspectd's archived and "
                                                                  "failed files while they are larger than this")
    interval_s: float = Field(3600.0, ge=1, description="how often retention runs (also once at start)")
    batch_rows: int = Field(50, ge=1, le=100_000, description="rows deleted per transaction (the writer waits for "
                                                               "one batch at most)")
    pause_ms: float = Field(20.0, ge=0, description="pause between two batches, leaving the store to the writer")

    @model_validator(mode="after")
    def _rows_outlive_maps(self) -> RetentionSettings:
        if self.maps_days is not None and self.rows_days is not None and self.maps_days > self.rows_days:
            raise ValueError(f"maps_days ({self.maps_days}) is longer than rows_days ({self.rows_days}): maps go "
                             "with their rows")
        return self


class DiskGuardSettings(StrictModel):
    min_free_mb: float = Field(1024, ge=0, description="below this many free MiB on the store's or the archive's "
                                                       "file system, no new file is taken (0 = off)")
    check_interval_s: float = Field(10.0, gt=0, le=3600, description="how often free space is measured")
    channels: tuple[str, ...] = Field((), description="alert channels told when the guard pauses and resumes")


class WebhookChannel(StrictModel):
    type: Literal["webhook"]
    name: str
    url: str = Field(pattern=r"^https?://")
    secret_file: Path | None = Field(None, description="HMAC-SHA256 key; e.g. a systemd credential")
    timeout_s: float = Field(5.0, gt=0, le=120)


class LogChannel(StrictModel):
    type: Literal["log"]
    name: str
    path: Path | None = Field(None, description="JSON lines file; null = the daemon log only")


class CommandChannel(StrictModel):
    type: Literal["command"]
    name: str
    argv: tuple[str, ...] = Field(min_length=1, description="run without a shell; alert JSON on stdin")
    timeout_s: float = Field(10.0, gt=0, le=600)


class _ServerChannel(StrictModel):
    """A channel that logs in to a server: host, optional user and password file."""

    name: str
    host: str
    username: str | None = None
    password_file: Path | None = Field(None, description="e.g. a systemd credential")
    timeout_s: float = Field(10.0, gt=0, le=120)


class EmailChannel(_ServerChannel):
    type: Literal["email"]
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    recipients: tuple[str, ...] = Field(min_length=1)


class MqttChannel(_ServerChannel):
    type: Literal["mqtt"]
    port: int = Field(1883, ge=1, le=65535)
    topic: str = Field("inspectd/{camera}/alerts", description="{camera} and {rule} are filled in")
    qos: Literal[0, 1, 2] = 1
    tls: bool = False


Channel = Annotated[
    WebhookChannel | LogChannel | CommandChannel | EmailChannel | MqttChannel, Field(discriminator="type")
]


class AlertRule(StrictModel):
    name: str
    verdicts: tuple[Verdict, ...] = (Verdict.ANOMALOUS,)
    min_score: float | None = Field(None, ge=0, le=1)
    cameras: tuple[str, ...] = Field((), description="empty = every camera")
    channels: tuple[str, ...] = Field(min_length=1)
    cooldown_s: float = Field(60.0, ge=0, description="per rule and camera")


class RetrySettings(StrictModel):
    base_s: float = Field(1.0, gt=0)
    max_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(50, ge=1)


class AlertSettings(StrictModel):
    channels: tuple[Channel, ...] = ()
    rules: tuple[AlertRule, ...] = ()
    retry: RetrySettings = RetrySettings()

    @model_validator(mode="after")
    def _names(self) -> AlertSettings:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        for rule in self.rules:
            unknown = [c for c in rule.channels if c not in names]
            if unknown:
                raise ValueError(f"rule {rule.name!r} names unknown channels {unknown}; defined: {names}")
        return self


class Settings(StrictModel):
    source: Path | None = Field(None, exclude=True)
    model: ModelSettings
    real: RealOverrides = RealOverrides()
    images: ImageSettings = ImageSettings()
    threshold: float | None = Field(None, ge=0, le=1, description="null = the bundle's calibrated threshold")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    watch: WatchSettings = WatchSettings()
    queue: QueueSettings = QueueSettings()
    archive: ArchiveSettings = ArchiveSettings()
    store: StoreSettings = StoreSettings()
    alerts: AlertSettings = AlertSettings()
    disk_guard: DiskGuardSettings = DiskGuardSettings()
    retention: RetentionSettings = RetentionSettings()
    metrics: MetricsSettings = MetricsSettings()
    console: ConsoleSettings = ConsoleSettings()

    @model_validator(mode="after")
    def _guard_channels(self) -> Settings:
        names = [c.name for c in self.alerts.channels]
        unknown = [c for c in self.disk_guard.channels if c not in names]
        if unknown:
            raise ValueError(f"disk_guard.channels names unknown channels {unknown}; defined: {names}")
        return self


def _describe(errors: list[dict[str, Any]]) -> str:
    lines = []
    for err in errors:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def validated_yaml(path: Path, model: type[ModelT], what: str = "configuration") -> ModelT:
    """Read a YAML mapping into a pydantic model; every error names the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid {what}:\n{_describe(exc.errors())}") from exc


def load_settings(path: Path, require_paths: bool = True) -> Settings:
    path = Path(path)
    settings = validated_yaml(path, Settings)
    base = path.resolve().parent
    bundle = resolve_beside(base, settings.model.bundle)
    if require_paths and not bundle.is_dir():
        raise ConfigError(f"{path}: model.bundle: folder {bundle} does not exist")
    challenger = settings.model.challenger
    if challenger is not None:
        challenger = challenger.model_copy(update={"bundle": resolve_beside(base, challenger.bundle)})
        if require_paths and not challenger.bundle.is_dir():
            raise ConfigError(f"{path}: model.challenger.bundle: folder {challenger.bundle} does not exist")
    try:
        resolved = _resolve_paths(settings, base, bundle, challenger).model_copy(update={"source": path})
        check_apart(*_folder_roles(resolved))  # at start, on SIGHUP and in doctor: all three load the config here
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return resolved


def _folder_roles(settings: Settings) -> tuple[list[tuple[str, Place]], list[Place]]:
    """The working folders (drop, archive, failed) and what must stay out of them (config_folders.py says why)."""
    work = [("drop", Place(f"watch.folders[{i}].path", f.path)) for i, f in enumerate(settings.watch.folders)]
    work += [("archive", Place("archive.folder", settings.archive.folder)),
             ("failed", Place("archive.failed_folder", settings.archive.failed_folder))]
    protected = [Place("model.bundle", settings.model.bundle)]
    if settings.model.challenger is not None:
        protected.append(Place("model.challenger.bundle", settings.model.challenger.bundle))
    if settings.source is not None:
        protected.insert(0, Place("the configuration file", Path(settings.source).resolve()))
    for key, value in (("model.canary_image", settings.model.canary_image),
                       ("console.users_file", settings.console.users_file),
                       ("store.url", sqlite_file(settings.store.url))):
        if value is not None:
            protected.append(Place(key, value))
    for channel in settings.alerts.channels:
        for key in ("secret_file", "password_file", "path"):
            if getattr(channel, key, None) is not None:
                protected.append(Place(f"alerts.channels[{channel.name}].{key}", getattr(channel, key)))
    return work, protected


def resolve_beside(base: Path, value: Path | None) -> Path | None:
    """A path from a file under ``base`` (its folder): relative paths are read from there, not from the cwd."""
    if value is None:
        return None
    return (value if value.is_absolute() else base / value).resolve()


def _resolve_paths(settings: Settings, base: Path, bundle: Path,
                   challenger: ChallengerSettings | None = None) -> Settings:
    folders = tuple(f.model_copy(update={"path": resolve_beside(base, f.path)}) for f in settings.watch.folders)
    cameras = [f.camera for f in folders]
    if len(set(f.path for f in folders)) != len(folders):
        raise ValueError("watch.folders: the same folder is listed twice")
    archive = settings.archive.model_copy(
        update={
            "folder": resolve_beside(base, settings.archive.folder),
            "failed_folder": resolve_beside(base, settings.archive.failed_folder),
        }
    )
    url = settings.store.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        url = "sqlite:///" + str(resolve_beside(base, Path(url[len("sqlite:///"):])))
    channels = tuple(
        c.model_copy(update={k: resolve_beside(base, getattr(c, k)) for k in ("secret_file", "path", "password_file")
                             if getattr(c, k, None)})
        for c in settings.alerts.channels
    )
    for rule in settings.alerts.rules:
        unknown = [c for c in rule.cameras if c not in cameras]
        if unknown and cameras:
            raise ValueError(f"alerts.rules: rule {rule.name!r} names cameras {unknown} not in watch.folders")
    return settings.model_copy(
        update={
            "model": settings.model.model_copy(update={
                "bundle": bundle,
                "challenger": challenger,
                "canary_image": resolve_beside(base, settings.model.canary_image) if settings.model.canary_image else None,
            }),
            "watch": settings.watch.model_copy(update={"folders": folders}),
            "archive": archive,
            "store": settings.store.model_copy(update={"url": url}),
            "alerts": settings.alerts.model_copy(update={"channels": channels}),
            "console": settings.console.model_copy(update={
                "users_file": resolve_beside(base, settings.console.users_file) if settings.console.users_file else None}),
        }
    )


def challenger_settings(settings: Settings) -> Settings | None:
    """The settings a challenger's model process loads with, or None without a challenger.

    Its own bundle and device (null: the champion's); the batch size, CPU threads and image limits are the
    champion's. The champion's ``threshold``, ``real`` and ``max_new_tokens`` overrides are not applied: they were
    tuned for the champion's bundle, and a challenger is measured as its own bundle was calibrated."""
    challenger = settings.model.challenger
    if challenger is None:
        return None
    model = settings.model.model_copy(update={
        "bundle": challenger.bundle, "device": challenger.device or settings.model.device, "challenger": None,
        "canary_image": None, "canary_verdict": None, "max_new_tokens": None})
    return settings.model_copy(update={"model": model, "threshold": None, "real": RealOverrides()})


def default_config_path() -> Path:
    """The shipped default, next to the package in a source checkout."""
    return Path(__file__).resolve().parent.parent / "config" / "inspectd.yaml"


SERVICE_CONFIG = Path("/etc/inspectd/inspectd.yaml")


def config_path(given: str | None) -> Path:
    """The config a command reads: ``--config``, else $INSPECTD_CONFIG, else the service's
    ``/etc/inspectd/inspectd.yaml`` when it exists (so an engineer's ``inspectd history`` reads the store the
    service writes), else the shipped default."""
    if given:
        return Path(given)
    if os.environ.get("INSPECTD_CONFIG"):
        return Path(os.environ["INSPECTD_CONFIG"])
    if SERVICE_CONFIG.is_file():
        return SERVICE_CONFIG
    return default_config_path()
