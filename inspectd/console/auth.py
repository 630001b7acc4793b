"""Who may use the console: users and scrypt password hashes from a file, HTTP Basic, CSRF tokens.

The file holds one ``name:scrypt$N$r$p$salt$hash`` line per user (``inspectd
console-user NAME`` writes one); there is no default user or password. A line
may end with the user's rights, ``name:scrypt$...$hash:promote`` (a comma
separated list; ``console-user NAME --right promote``): ``promote`` lets the
user promote the challenger or roll back from the Models page. An unknown
right is an error naming the file, the line and the right. A
systemd credential works as the file (``LoadCredential=console-users:...``,
``users_file: ${CREDENTIALS_DIRECTORY}/console-users`` resolved by the unit).
Basic credentials travel in clear text: on a LAN, put the console behind a
TLS reverse proxy. Browsers resend Basic credentials to any site that posts
to the console, so every POST carries a CSRF token bound to the user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from inspectd.errors import InspectdError

_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.@-]{1,64}):scrypt\$(?P<n>\d+)\$(?P<r>\d+)\$(?P<p>\d+)\$"
                   r"(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]+)(?::(?P<rights>[^:]*))?$")
# what a users-file line may grant after its hash; a right the console does not know is refused at start
PROMOTE = "promote"  # promote the challenger and roll back from the Models page (``routes/models.py``)
RIGHTS = (PROMOTE,)
_N, _R, _P = 2**14, 8, 1


class UsersFileError(InspectdError):
    """The console's users file cannot be read or has a malformed line."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class _Hash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, password: str) -> bool:
        tried = hashlib.scrypt(password.encode(), salt=self.salt, n=self.n, r=self.r, p=self.p,
                               dklen=len(self.digest), maxmem=256 * 1024 * 1024)
        return hmac.compare_digest(tried, self.digest)


class Users:
    """The users file, read once at start (restart the console to change users).

    Every check of a name and password costs one scrypt, whether the name exists
    or not (an unknown name is checked against a dummy hash with the file's
    parameters), so the answer time does not tell which names exist. Successful
    checks are remembered (Basic resends the password with every request) in a
    small LRU keyed by an HMAC under a key made at start; failures never are.
    """

    cache_size = 256

    def __init__(self, hashes: dict[str, _Hash], rights: dict[str, frozenset[str]] | None = None) -> None:
        self._hashes = hashes
        self._rights = rights or {}
        self._key = os.urandom(32)
        self._checked: OrderedDict[bytes, str] = OrderedDict()  # successes only, least recently used first
        self._lock = threading.Lock()  # check() runs in worker threads, cached() on the event loop
        n, r, p = Counter((h.n, h.r, h.p) for h in hashes.values()).most_common(1)[0][0] if hashes else (_N, _R, _P)
        self._dummy = _Hash(n, r, p, os.urandom(16), os.urandom(32))

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsersFileError(f"console.users_file {path}: cannot read it ({exc})") from exc
        hashes, rights = {}, {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _LINE.match(line.strip())
            if match is None:
                raise UsersFileError(f"console.users_file {path}, line {number}: not 'name:scrypt$N$r$p$salt$hash' "
                                     "or 'name:scrypt$N$r$p$salt$hash:RIGHT,...' (write lines with: inspectd "
                                     "console-user NAME [--right promote])")
            hashes[match["name"]] = _Hash(int(match["n"]), int(match["r"]), int(match["p"]),
                                          base64.b64decode(match["salt"]), base64.b64decode(match["hash"]))
            rights[match["name"]] = _rights(path, number, match["rights"])
        if not hashes:
            raise UsersFileError(f"console.users_file {path}: no users")
        return cls(hashes, rights)

    def rights(self, name: str | None) -> frozenset[str]:
        """The rights the users file gives ``name`` (none for an unknown name or None)."""
        return self._rights.get(name, frozenset()) if name is not None else frozenset()

    def may(self, name: str | None, right: str) -> bool:
        return right in self.rights(name)

    @staticmethod
    def _credentials(header: str | None) -> tuple[str, str] | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return name, password

    def _cache_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, name.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    def cached(self, header: str | None) -> str | None:
        """The user of a header that passed check() recently, else None; no scrypt (cheap on the event loop)."""
        credentials = self._credentials(header)
        if credentials is None:
            return None
        key = self._cache_key(*credentials)
        with self._lock:
            name = self._checked.get(key)
            if name is not None:
                self._checked.move_to_end(key)
        return name

    def check(self, header: str | None) -> str | None:
        """The user named by a valid ``Authorization: Basic`` header, else None (one scrypt unless cached)."""
        credentials = self._credentials(header)
        if credentials is None:
            return None
        name = self.cached(header)
        if name is not None:
            return name
        name, password = credentials
        stored = self._hashes.get(name)
        matched = (stored or self._dummy).matches(password)  # the same cost for a name that does not exist
        if stored is None or not matched:
            return None
        with self._lock:
            self._checked[self._cache_key(name, password)] = name
            while len(self._checked) > self.cache_size:
                self._checked.popitem(last=False)
        return name


def _rights(path: Path, number: int, text: str | None) -> frozenset[str]:
    """The rights after a line's hash: a comma-separated list of known rights (none when the line has none)."""
    if text is None:
        return frozenset()
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in RIGHTS:
            shown = repr(name[:40]) if name else "an empty right"
            raise UsersFileError(f"console.users_file {path}, line {number}: unknown right {shown} (known: "
                                 f"{', '.join(RIGHTS)})")
    return frozenset(names)


def users_line(name: str, password_hash: str, rights: list[str] | tuple[str, ...] = ()) -> str:
    """A users-file line: ``name:hash``, with ``:right,...`` when the user has rights."""
    unknown = [right for right in rights if right not in RIGHTS]
    if unknown:
        raise UsersFileError(f"unknown right {unknown[0]!r} (known: {', '.join(RIGHTS)})")
    given = list(dict.fromkeys(rights))  # each once, in the order given
    return f"{name}:{password_hash}" + (f":{','.join(given)}" if given else "")


class LoginThrottle:
    """Failed logins per client address: a token bucket of ``failures`` tries refilled over ``window_s``.

    A try takes a token before the password check and a success gives it back, so
    no more than ``failures`` checks fail per window, concurrent ones included.
    An empty bucket is answered 429 with the seconds until the next token, without
    a check. IPv6 clients count per /64 (one host usually holds the whole prefix).
    Behind a reverse proxy every client has the proxy's address: throttle there.
    """

    max_addresses = 10_000

    def __init__(self, failures: int, window_s: float, clock=time.monotonic) -> None:
        self.failures, self.rate, self.clock = failures, failures / window_s, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)
        self._lock = threading.Lock()

    @staticmethod
    def _key(address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.failures, now))
        return min(self.failures, tokens + (now - at) * self.rate)

    def retry_after(self, address: str) -> int:
        """Whole seconds until ``address`` may try again; 0 when it may now."""
        with self._lock:
            tokens = self._tokens(self._key(address), self.clock())
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def take(self, address: str) -> bool:
        """Spend one try; False (nothing spent) when there is none left."""
        key, now = self._key(address), self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens < 1:
                return False
            self._buckets[key] = (tokens - 1, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        return True

    def give_back(self, address: str) -> None:
        """The try succeeded: it does not count as a failure."""
        key, now = self._key(address), self.clock()
        with self._lock:
            tokens = self._tokens(key, now) + 1
            if tokens >= self.failures:
                self._buckets.pop(key, None)  # a full bucket is the default: forget the address
            else:
                self._buckets[key] = (tokens, now)


class CsrfTokens:
    """HMAC(user) under a key made at start: a form from this console carries it, another site cannot."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)

    def token(self, user: str) -> str:
        return hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()

    def valid(self, user: str, token: object) -> bool:
        """``token`` as a form sent it: anything but a non-empty ASCII string (a file, say) is invalid."""
        return isinstance(token, str) and token.isascii() and bool(token) and \
            hmac.compare_digest(self.token(user), token)


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
