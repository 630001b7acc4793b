"""Who may use the console: users and scrypt password hashes from a file, HTTP Basic, CSRF tokens.

The file holds one ``name:scrypt$N$r$p$salt$hash`` line per user (``inspectd
console-user NAME`` writes one); there is no default user or password. A
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
import os
import re
from dataclasses import dataclass
from pathlib import Path

from inspectd.errors import InspectdError

_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.@-]{1,64}):scrypt\$(?P<n>\d+)\$(?P<r>\d+)\$(?P<p>\d+)\$"
                   r"(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]+)$")
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
    """The users file, read once at start (restart the console to change users)."""

    def __init__(self, hashes: dict[str, _Hash]) -> None:
        self._hashes = hashes
        self._checked: dict[tuple[str, bytes], bool] = {}  # scrypt costs ~50 ms; Basic resends every request

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsersFileError(f"console.users_file {path}: cannot read it ({exc})") from exc
        hashes = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _LINE.match(line.strip())
            if match is None:
                raise UsersFileError(f"console.users_file {path}, line {number}: not 'name:scrypt$N$r$p$salt$hash' "
                                     "(write lines with: inspectd console-user NAME)")
            hashes[match["name"]] = _Hash(int(match["n"]), int(match["r"]), int(match["p"]),
                                          base64.b64decode(match["salt"]), base64.b64decode(match["hash"]))
        if not hashes:
            raise UsersFileError(f"console.users_file {path}: no users")
        return cls(hashes)

    def check(self, header: str | None) -> str | None:
        """The user named by a valid ``Authorization: Basic`` header, else None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        stored = self._hashes.get(name)
        if stored is None:
            return None
        key = (name, hashlib.sha256(password.encode()).digest())
        if key not in self._checked:
            self._checked[key] = stored.matches(password)
        return name if self._checked[key] else None


class CsrfTokens:
    """HMAC(user) under a key made at start: a form from this console carries it, another site cannot."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)

    def token(self, user: str) -> str:
        return hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()

    def valid(self, user: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.token(user), token)


def is_loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
