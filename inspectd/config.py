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
                                     "the config file, as model.bundle; its hashes are verified at start and on SIGHUP")
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


class PromotionSettings(StrictModel):
    """When ``inspectd models promote`` (and the console's Promote) refuses a challenger without ``--force``: its
    figures on the line's reviewed parts are compared with the champion's on the same parts."""

    margin: float = Field(0.02, ge=0, le=1, description="refuse when the challenger's miss rate or false-alarm "
                                                        "rate on reviewed parts is higher than the champion's by "
                                                        "more than this, or its AUROC lower by more than this")
    min_reviewed: int = Field(20, ge=0, description="refuse when fewer reviewed parts than this were decided by "
                                                    "both models (too few to tell them apart)")


class ModelSettings(StrictModel):
    bundle: Path = Field(description="model bundle folder (bundle.json inside)")
    device: str = Field("auto", description="auto (the first CUDA GPU, else the CPU), cpu, cuda or cuda:N")
    batch_size: int = Field(4, ge=1, le=256, description="images per batch; rows per generate call (a bundle "
                                                         "with score.views makes each image that many rows, "
                                                         "score.tiles N adds N x N more)")
    max_new_tokens: int | None = Field(None, ge=8, le=4096, description="reply length cap, in tokens; null = the "
                                                                        "bundle's value")
    threads: int = Field(1, ge=1, le=256, description="torch CPU threads (intra- and inter-op); 1 stays fast "
                                                      "when other processes share the cores, where torch's default "
                                                      "(one per core) made a batch 20-70x slower; raise it on a "
                                                      "dedicated CPU-only box with a large quantized model")
    canary_image: Path | None = Field(None, description="image a reloaded bundle must inspect before it replaces "
                                                         "the one in use (best: a known part of the line); null = a "
                                                         "plain grey image")
    canary_verdict: Verdict | None = Field(
        None, description="verdict the canary image must get: normal or anomalous (null = any verdict whose reply "
                          "parses)")
    challenger: ChallengerSettings | None = Field(None, description="a candidate bundle measured on the line's "
                                                                     "parts in the shadow of this one, in its own "
                                                                     "model process; its results go to "
                                                                     "challenger_results, never to alerts, files or "
                                                                     "inspection rows (null = none)")
    promotion: PromotionSettings = Field(PromotionSettings(), description="the rule a promotion of the challenger "
                                                                          "must pass on reviewed parts")

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
    max_pixels: int = Field(40_000_000, ge=1, description="refuse larger images before decoding them "
                                                           "(decompression bombs)")
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1, description="refuse larger files")


DEFAULT_IGNORE = (".*", "*~", "*.tmp", "*.temp", "*.part", "*.partial", "*.swp", "*.crdownload", "*.filepart")


class WatchedFolder(StrictModel):
    path: Path = Field(description="a drop folder a camera's tools write into (relative paths follow the config file)")
    camera: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
                        description="the camera's name, stored with each of its inspections")


class WatchSettings(StrictModel):
    folders: tuple[WatchedFolder, ...] = Field((), description="the drop folders watched, one camera each; "
                                                               "inspectd run needs at least one")
    observer: Literal["inotify", "polling"] = Field("inotify", description="inotify, or polling for network "
                                                                           "(NFS/SMB) shares")
    poll_interval_s: float = Field(1.0, gt=0, le=60, description="the polling observer's interval, in seconds")
    stable_s: float = Field(1.0, ge=0, le=600, description="polling and rescans: a file is read once its size and "
                                                          "mtime are unchanged this long")
    ignore_patterns: tuple[str, ...] = Field(DEFAULT_IGNORE, description="file names (glob patterns) left alone "
                                                                         "until they are renamed")
    reconcile_interval_s: float = Field(60.0, ge=1, description="rescan period: folders are rescanned for files whose "
                                                                 "events were lost")


class QueueSettings(StrictModel):
    capacity: int = Field(256, ge=1, le=100_000, description="files waiting for the model")
    max_wait_ms: int = Field(0, ge=0, le=60_000, description="wait this long to fill a batch; 0 = take what is "
                                                             "queued (lowest latency)")


class MetricsSettings(StrictModel):
    enabled: bool = Field(False, description="serve Prometheus metrics on /metrics and a health check on "
                                             "/healthz over HTTP")
    address: str = Field("127.0.0.1", description="listen address; 127.0.0.1 keeps it on the box (else put "
                                                  "a firewall in front)")
    port: int = Field(9464, ge=1, le=65535, description="listen port")


class ConsoleSettings(StrictModel):
    """``inspectd serve``: the engineers' web console over the store."""

    address: str = Field("127.0.0.1", description="inspectd serve's listen address; anything but loopback "
                                                  "needs users_file")
    port: int = Field(8780, ge=1, le=65535, description="the console's port")
    users_file: Path | None = Field(None, description="'name:scrypt$N$r$p$salt$hash[:rights]' lines (inspectd "
                                                      "console-user NAME [--right promote]); required off loopback, "
                                                      "no default user or password")
    time_zone: str = Field("UTC", description="IANA zone of the console's times, filters, days and "
                                              "shifts, e.g. Europe/Berlin")
    shifts: tuple[int, ...] = Field((6, 14, 22), description="local hours at which shifts start (ascending, 0-23); "
                                                              "the stats are per shift")
    page_size: int = Field(50, ge=1, le=500, description="history rows per page (a size parameter may ask up to "
                                                         "10x)")
    allowed_hosts: tuple[str, ...] = Field(
        (), description="host names (or IP addresses) the console answers to besides the loopback names "
                        "(127.0.0.1, localhost, [::1]) and the listen address, which are always allowed; a request "
                        "naming any other Host gets 400, so a page on another site cannot reach the console through "
                        "DNS rebinding. Set the name engineers type (console.plant.example, or *.plant.example) when "
                        "listening off loopback or behind a reverse proxy")
    max_connections: int = Field(200, ge=2, le=10_000, description="open connections at most (uvicorn's "
                                 "limit_concurrency): past it the longest idle connection is closed, or a 503 answered "
                                 "when every one is busy; keep it well under the unit's LimitNOFILE (1024)")
    request_timeout_s: float = Field(10.0, gt=0, le=300, description="seconds a connection has to send a request's "
                                     "headers and body; an idle or slow client is disconnected after it")
    login_failures: int = Field(10, ge=1, le=10_000, description="failed logins allowed per client address (IPv6: "
                                "per /64) within login_window_s; past them the address gets 429 (Retry-After) "
                                "without a password check")
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
    mode: Literal["move", "keep"] = Field("move", description="move inspected files into folder (failed ones into "
                                                              "failed_folder), or keep them where they are")
    folder: Path = Field(Path("archive"), description="the archive: <folder>/<YYYY-MM-DD>/<camera>/<file>")
    failed_folder: Path = Field(Path("failed"), description="files that could not be inspected: "
                                                            "<failed_folder>/<camera>/<file> and <file>.error.json")


class StoreSettings(StrictModel):
    url: str = Field("sqlite:///inspectd.db", description="any SQLAlchemy URL, e.g. "
                     "postgresql+psycopg://user@host/db; relative SQLite paths follow the config file")
    save_maps: bool = Field(True, description="keep the map and mask PNGs in the artifacts table")


class RetentionSettings(StrictModel):
    """Nothing is removed unless a budget is set here."""

    maps_days: float | None = Field(None, gt=0, description="delete map/mask PNGs of inspections older than this, "
                                                            "the challenger's too (its verdicts stay); null = keep")
    rows_days: float | None = Field(None, gt=0, description="delete inspections (with their maps and alerts) older "
                                                            "than this; a reviewed one is kept as a tombstone "
                                                            "with its reviews")
    archive_days: float | None = Field(None, gt=0, description="delete the archived and failed files inspectd put "
                                                                "there (their inspection row or archive_files names "
                                                                "them) older than this; nothing else in those folders "
                                                                "is ever deleted")
    archive_max_gb: float | None = Field(None, gt=0, description="delete the oldest days of inspectd's archived and "
                                                                  "failed files while they are larger than this (by "
                                                                  "their recorded sizes; today's are kept; files "
                                                                  "others put there are not counted)")
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
    min_free_mb: float = Field(1024, ge=0, description="below this many free MiB on the file system of the "
                                                       "SQLite store, the archive or the failed folder, no new file is "
                                                       "taken (0 = off)")
    check_interval_s: float = Field(10.0, gt=0, le=3600, description="how often free space is measured")
    channels: tuple[str, ...] = Field((), description="alert channels told when the guard pauses (disk_low) "
                                                      "and resumes (disk_ok)")


class WebhookChannel(StrictModel):
    type: Literal["webhook"] = Field(description="POST the alert as JSON to url, signed with secret_file if set")
    name: str = Field(description="the channel's name, which rules and disk_guard.channels use")
    url: str = Field(pattern=r"^https?://", description="the endpoint, http:// or https://")
    secret_file: Path | None = Field(None, description="HMAC-SHA256 key (X-Inspectd-Signature header); e.g. a "
                                                         "systemd credential")
    timeout_s: float = Field(5.0, gt=0, le=120, description="seconds a delivery may take before it is retried")


class LogChannel(StrictModel):
    type: Literal["log"] = Field(description="a line in the daemon log, and optionally a JSON-lines file")
    name: str = Field(description="the channel's name, which rules and disk_guard.channels use")
    path: Path | None = Field(None, description="JSON lines file; null = the daemon log only")


class CommandChannel(StrictModel):
    type: Literal["command"] = Field(description="run a local command (e.g. a siren) with the alert JSON on stdin")
    name: str = Field(description="the channel's name, which rules and disk_guard.channels use")
    argv: tuple[str, ...] = Field(min_length=1, description="run without a shell; alert JSON on stdin")
    timeout_s: float = Field(10.0, gt=0, le=600, description="seconds the command may run before it is retried")


class _ServerChannel(StrictModel):
    """A channel that logs in to a server: host, optional user and password file."""

    name: str = Field(description="the channel's name, which rules and disk_guard.channels use")
    host: str = Field(description="the server's host name or address")
    username: str | None = Field(None, description="log in as this user (null = no login)")
    password_file: Path | None = Field(None, description="file holding the password, e.g. a systemd credential")
    timeout_s: float = Field(10.0, gt=0, le=120, description="seconds a delivery may take before it is retried")


class EmailChannel(_ServerChannel):
    type: Literal["email"] = Field(description="an e-mail over SMTP")
    port: int = Field(587, ge=1, le=65535, description="the SMTP server's port")
    security: Literal["starttls", "ssl", "none"] = Field("starttls", description="STARTTLS, SSL from the start, or "
                                                                                 "plain SMTP")
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="the From address")
    recipients: tuple[str, ...] = Field(min_length=1, description="the To addresses")


class MqttChannel(_ServerChannel):
    type: Literal["mqtt"] = Field(description="publish the alert as JSON to an MQTT broker")
    port: int = Field(1883, ge=1, le=65535, description="the broker's port")
    topic: str = Field("inspectd/{camera}/alerts", description="{camera} and {rule} are filled in")
    qos: Literal[0, 1, 2] = Field(1, description="MQTT quality of service of the published alert")
    tls: bool = Field(False, description="connect to the broker over TLS")


Channel = Annotated[
    WebhookChannel | LogChannel | CommandChannel | EmailChannel | MqttChannel, Field(discriminator="type")
]


class AlertRule(StrictModel):
    name: str = Field(description="the rule's name, stored with its alerts")
    verdicts: tuple[Verdict, ...] = Field((Verdict.ANOMALOUS,), description="verdicts that raise an alert")
    min_score: float | None = Field(None, ge=0, le=1, description="alert only when the score is at least this "
                                                                  "(null = any score)")
    cameras: tuple[str, ...] = Field((), description="empty = every camera")
    channels: tuple[str, ...] = Field(min_length=1, description="names of the alerts.channels to send to")
    cooldown_s: float = Field(60.0, ge=0, description="per rule and camera: an alert within this many seconds of the "
                                                      "last is stored as suppressed, never sent")


class RetrySettings(StrictModel):
    base_s: float = Field(1.0, gt=0, description="the first retry's delay before jitter, in seconds")
    max_s: float = Field(300.0, gt=0, description="the longest delay between two attempts, in seconds")
    max_attempts: int = Field(50, ge=1, description="attempts before an alert is marked failed")


class AlertSettings(StrictModel):
    channels: tuple[Channel, ...] = Field((), description="where alerts are sent, one entry per channel, by type; "
                                                          "names unique")
    rules: tuple[AlertRule, ...] = Field((), description="which inspections raise alerts, and on which channels")
    retry: RetrySettings = Field(RetrySettings(), description="backoff after a failed delivery: min(max_s, "
                                                              "base_s * 2^(n-1)) seconds after the n-th attempt, "
                                                              "times a jitter in [0.5, 1]")

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
    model: ModelSettings = Field(description="the model bundle and how it runs")
    real: RealOverrides = Field(RealOverrides(), description="overrides of the bundle's ReAL parameters; a parameter "
                                                             "left out keeps the bundle's value")
    images: ImageSettings = Field(ImageSettings(), description="limits on the images taken")
    threshold: float | None = Field(None, ge=0, le=1, description="verdict threshold on P(yes); null = the bundle's "
                                                                  "calibrated threshold")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="the daemon's log level "
                                                                                       "(--log-level wins)")
    watch: WatchSettings = Field(WatchSettings(), description="the drop folders and how new files are found")
    queue: QueueSettings = Field(QueueSettings(), description="files found, waiting for the model")
    archive: ArchiveSettings = Field(ArchiveSettings(), description="where inspected and failed files go")
    store: StoreSettings = Field(StoreSettings(), description="the database of inspections, maps and alerts")
    alerts: AlertSettings = Field(AlertSettings(), description="alert channels, rules and retries")
    disk_guard: DiskGuardSettings = Field(DiskGuardSettings(), description="stop taking files when a disk fills up")
    retention: RetentionSettings = Field(RetentionSettings(), description="what is deleted, and when; nothing is "
                                                                         "removed unless a budget is set")
    metrics: MetricsSettings = Field(MetricsSettings(), description="the Prometheus metrics and health endpoint")
    console: ConsoleSettings = Field(ConsoleSettings(), description="inspectd serve: the engineers' web console")

    @model_validator(mode="after")
    def _guard_channels(self) -> Settings:
        names = [c.name for c in self.alerts.channels]
        unknown = [c for c in self.disk_guard.channels if c not in names]
        if unknown:
            raise ValueError(f"disk_guard.channels names unknown channels {unknown}; defined: {names}")
        return self


def _describe(errors: list[dict[str, Any]]) -> str:
    """Every error as ``key: what``, joined by "; ": one line, as the command line and the journal print an
    error (a newline would be shown escaped, as a literal backslash-n)."""
    lines = []
    for err in errors:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


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
        raise ConfigError(f"{path}: invalid {what}: {_describe(exc.errors())}") from exc


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
