"""``widget-server admin``: accounts of the admin at /admin, from the command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from ..admin.accounts import ROLES, AccountError, AccountStore
from ..errors import ConfigurationError
from ..settings import Settings
from ..store.audit import AuditLog
from ..store.client import open_store
from ..store.keys import Keys

ACTOR = "command line"


def add_parsers(sub: Any) -> None:
    admin = sub.add_parser("admin", help="accounts of the admin at /admin")
    asub = admin.add_subparsers(dest="admin_command", required=True)
    create = asub.add_parser("create", help="create an account (asks for the password twice)")
    create.add_argument("email")
    create.add_argument("--role", choices=ROLES, default="editor", help="default: editor")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    reset = asub.add_parser("reset-password", help="set a new password; signs the account out")
    reset.add_argument("email")
    reset.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    asub.add_parser("list", help="list the accounts and their roles")


def read_password(from_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice at a prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise ConfigurationError("the passwords do not match")
    return first


async def run(url: str, settings: Settings, args: argparse.Namespace) -> str:
    client = open_store(url, settings.redis_mode)
    keys = Keys(settings.redis_prefix)
    accounts = AccountStore(client, keys)
    audit = AuditLog(client, keys)
    try:
        if args.admin_command == "list":
            users = await accounts.list()
            if not users:
                return "no accounts yet: widget-server admin create EMAIL --role owner"
            return "\n".join(f"{u.email:40} {u.role}" for u in users)
        password = read_password(args.password_stdin)
        try:
            if args.admin_command == "create":
                user = await accounts.create(args.email, password, args.role)
                await audit.record(
                    ACTOR, "account.create", user.email, after={"email": user.email,
                                                                "role": user.role}
                )  # fmt: skip
                return f"created {user.email} ({user.role}); sign in at /admin/login"
            user = await accounts.set_password(args.email, password)
            await audit.record(ACTOR, "account.reset_password", user.email)
            return f"new password set for {user.email}; their open sessions have ended"
        except AccountError as exc:
            raise ConfigurationError(str(exc)) from None
    finally:
        await client.aclose()
