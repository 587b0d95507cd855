"""Admin accounts in Redis: email, role and an argon2 password hash.

Roles are ordered: a viewer sees everything and changes nothing, an editor also manages campaigns,
an owner also manages sites, their secrets and the accounts. Changing a password bumps the
account's generation, which ends every session signed in with the old one.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from redis.asyncio import Redis

from ..errors import WidgetServerError
from ..store.keys import Keys

Role = Literal["viewer", "editor", "owner"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "owner")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[^@\s<>\"',;]{1,190}\.[^@\s<>\"',;.]{2,63}$")


class AccountError(WidgetServerError):
    """An account change that cannot be made; the message says why, for the person making it."""


class User(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    role: Role
    password_hash: str
    created: float = 0.0
    generation: int = 1


def role_at_least(role: str, minimum: Role) -> bool:
    """Whether ``role`` grants everything ``minimum`` does (unknown roles grant nothing)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(minimum)


def normalize_email(email: str) -> str:
    """Lower-case and check an email address; raise AccountError if it is not one."""
    value = email.strip().lower()
    if not _EMAIL.match(value):
        raise AccountError(f"{email!r} is not an email address")
    return value


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password may have at most {MAX_PASSWORD_LENGTH} characters")
    return password


def digest(value: str) -> str:
    """A stable, non-reversible name for an email or IP in key names."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class AccountStore:
    """Accounts in one Redis hash; password hashing runs off the event loop."""

    def __init__(self, redis: Redis, keys: Keys, hasher: PasswordHasher | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._hasher = hasher or PasswordHasher()

    async def get(self, email: str) -> User | None:
        raw = await self._redis.hget(self._keys.admin_users(), email.strip().lower())
        return msgspec.json.decode(raw, type=User) if raw else None

    async def list(self) -> list[User]:
        raw = await self._redis.hvals(self._keys.admin_users())
        return sorted((msgspec.json.decode(r, type=User) for r in raw), key=lambda u: u.email)

    async def create(self, email: str, password: str, role: Role) -> User:
        """Create an account; raise AccountError if it exists or the input is not acceptable."""
        email = normalize_email(email)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        user = User(
            email=email,
            role=role,
            password_hash=await self._hash(check_password(password)),
            created=time.time(),
        )
        if not await self._redis.hsetnx(self._keys.admin_users(), email, _encode(user)):
            raise AccountError(f"an account for {email} exists already")
        return user

    async def set_password(self, email: str, password: str) -> User:
        """Replace the password and end every session of the account."""
        user = await self._require(email)
        changed = msgspec.structs.replace(
            user,
            password_hash=await self._hash(check_password(password)),
            generation=user.generation + 1,
        )
        await self._redis.hset(self._keys.admin_users(), user.email, _encode(changed))
        return changed

    async def set_role(self, email: str, role: Role) -> tuple[User, User]:
        """Change the role; the last owner keeps theirs. Returns (before, after)."""
        user = await self._require(email)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        if user.role == "owner" and role != "owner":
            await self._keep_an_owner(user.email)
        changed = msgspec.structs.replace(user, role=role)
        await self._redis.hset(self._keys.admin_users(), user.email, _encode(changed))
        return user, changed

    async def remove(self, email: str) -> User:
        user = await self._require(email)
        if user.role == "owner":
            await self._keep_an_owner(user.email)
        await self._redis.hdel(self._keys.admin_users(), user.email)
        return user

    async def authenticate(self, email: str, password: str) -> User | None:
        """The account if the password is right. Takes as long for unknown emails."""
        user = await self.get(email)
        stored = user.password_hash if user else _UNKNOWN_USER_HASH
        ok = await asyncio.to_thread(self._verify, stored, password)
        return user if ok and user is not None else None

    async def _require(self, email: str) -> User:
        user = await self.get(email)
        if user is None:
            raise AccountError(f"no account for {email.strip().lower()}")
        return user

    async def _keep_an_owner(self, leaving: str) -> None:
        owners = [u for u in await self.list() if u.role == "owner" and u.email != leaving]
        if not owners:
            raise AccountError("the last owner cannot be removed or demoted")

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


# Verified against when the email is unknown, so a wrong email costs as much as a wrong password.
_UNKNOWN_USER_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$nz6gewu+uV0u0ZlQ9yJnFg$"
    "28t8qKft9MrHKc6/jDnlMps8sojESb+0KH8hUI8oWvU"
)


def _encode(user: User) -> bytes:
    return msgspec.json.encode(user)
