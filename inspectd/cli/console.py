"""``inspectd serve`` (the web console) and ``inspectd console-user`` (a users-file line).

The settings (pydantic) and the console's modules are imported by the commands, not here: building the parser
for ``inspectd history`` must not load them."""

from __future__ import annotations

import argparse
import getpass
import re
import sys

from inspectd.errors import InspectdError


def cmd_serve(args) -> int:
    from inspectd.config import config_path, load_settings
    from inspectd.console.serve import serve  # the web stack, for this command only

    settings = load_settings(config_path(args.config), require_paths=False)
    return serve(settings, args.address, args.port)


def cmd_console_user(args) -> int:
    from inspectd.console.auth import hash_password, users_line

    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", args.name):
        raise InspectdError(f"user name {args.name!r}: letters, digits and _ . @ - only, at most 64")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise InspectdError("the two passwords differ")
    if len(password) < 10:
        raise InspectdError("password: at least 10 characters")
    print(users_line(args.name, hash_password(password), args.right or ()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="the web console over the store: history, inspections, reviews, stats")
    serve.add_argument("--address", help="listen address (overrides console.address)")
    serve.add_argument("--port", type=int, help="listen port (overrides console.port)")
    serve.set_defaults(handler=cmd_serve)
    user = sub.add_parser("console-user", help="print a console users-file line (name, scrypt password hash and "
                                               "rights)")
    user.add_argument("name")
    user.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    user.add_argument("--right", action="append", choices=("promote",), metavar="RIGHT",
                      help="give the user a right (repeatable); promote: promote the challenger and roll back from "
                           "the console's Models page")
    user.set_defaults(handler=cmd_console_user)
