"""sd_notify over $NOTIFY_SOCKET: READY, RELOADING, WATCHDOG, STOPPING, STATUS.

The protocol is a datagram of newline-separated assignments to a Unix socket
(an abstract one when the path starts with '@'); it needs no library. Outside
systemd the variable is unset and every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s = int(usec) / 1e6 / 2 if watchdog_for_us else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *assignments: str) -> bool:
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.connect(self.address)
                sock.sendall("\n".join(assignments).encode("utf-8"))
            except OSError:
                return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Followed by ``ready`` when the reload is over (systemd's protocol for ``systemctl reload``)."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                           "STATUS=reloading")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")
