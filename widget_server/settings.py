"""Settings, read once from the environment at the edge and passed down explicitly.

Every variable is documented in README.md ("Configuration"). Nothing else in the package reads the
environment.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from .errors import ConfigurationError
from .shipped import EMAIL_TEMPLATES_DIR, EXAMPLES_DIR, STATIC_DIR

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
REDIS_MODES = ("auto", "single", "cluster")
_REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to run, in one immutable object."""

    redis_url: str | None = None
    # "auto": a cluster when the server at redis_url says so; "single" or "cluster" to insist.
    redis_mode: str = "auto"
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    secret_key: str = ""
    log_level: str = "info"
    log_format: str = "json"
    redis_prefix: str = "ws"
    max_frame_bytes: int = 16 * 1024
    max_batch_bytes: int = 64 * 1024
    rate_per_second: float = 20.0
    rate_burst: int = 40
    hello_timeout_s: float = 10.0
    # Unread data a visitor's socket may hold (kernel and server buffers) before the visitor
    # counts as a slow reader and is closed with 4008.
    send_buffer_bytes: int = 64 * 1024
    session_ttl_s: int = 30 * 60
    profile_ttl_s: int = 180 * 24 * 3600
    # How long a claimed offer may take to be painted; unseen by then, it counts nowhere.
    offer_seen_timeout_s: int = 120
    presence_ttl_s: int = 90
    heartbeat_s: int = 25
    demo: bool = False
    country_header: str = "cf-ipcountry"
    # Trusted proxy header whose country goes into email consent records; "" records none.
    consent_country_header: str = ""
    # Visitor sockets one node holds: from one client address, of one site, in all (0: no limit).
    max_connections_per_ip: int = 1000
    max_connections_per_site: int = 0
    max_connections: int = 20000
    # Tries to start the embedded Valkey again after it died, before it is reported down.
    embedded_restarts: int = 8
    static_dir: Path = STATIC_DIR
    email_templates_dir: Path = EMAIL_TEMPLATES_DIR
    examples_dir: Path = EXAMPLES_DIR

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_float(
    env: Mapping[str, str], name: str, default: float, *, low: float, high: float
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _header_name(env: Mapping[str, str], name: str) -> str:
    """An HTTP header name from the environment, lower-cased; ``""`` when unset."""
    raw = (env.get(name) or "").strip().lower()
    if raw and not re.fullmatch(r"[a-z0-9-]{1,64}", raw):
        raise ConfigurationError(
            f"{name} must be an HTTP header name like cf-ipcountry, got {raw!r}"
        )
    return raw


def validate_redis_url(url: str) -> str:
    """Return ``url`` if it names a Redis/Valkey server, else raise ConfigurationError."""
    parsed = urlparse(url)
    if parsed.scheme not in _REDIS_SCHEMES:
        raise ConfigurationError(
            f"REDIS_URL must start with one of {', '.join(s + '://' for s in _REDIS_SCHEMES)};"
            f" got {url!r}"
        )
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ConfigurationError(f"REDIS_URL has no host: {url!r}")
    try:
        _ = parsed.port
    except ValueError:
        raise ConfigurationError(f"REDIS_URL has an invalid port: {url!r}") from None
    if parsed.scheme.startswith("valkey"):
        url = "redis" + url[len("valkey") :]
    return url


def load_secret_key(data_dir: Path) -> str:
    """Read the secret key kept in the data directory, creating it on first use (mode 0600)."""
    path = data_dir / "secret_key"
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Written in full under a private name, then linked into place: several processes starting
    # at once (workers, a CLI command) agree on the first key linked and never read half a file.
    draft = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            return path.read_text().strip()
    finally:
        draft.unlink()
    return key


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the environment; raise ConfigurationError on bad values."""
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL") or None
    if redis_url is not None:
        redis_url = validate_redis_url(redis_url)
    data_dir = Path(env.get("WIDGET_DATA_DIR") or "var")
    log_level = (env.get("WIDGET_LOG_LEVEL") or "info").lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigurationError(
            f"WIDGET_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}"
        )
    log_format = (env.get("WIDGET_LOG_FORMAT") or "json").lower()
    if log_format not in ("json", "text"):
        raise ConfigurationError(f"WIDGET_LOG_FORMAT must be json or text, got {log_format!r}")
    redis_mode = (env.get("WIDGET_REDIS_MODE") or "auto").lower()
    if redis_mode not in REDIS_MODES:
        raise ConfigurationError(
            f"WIDGET_REDIS_MODE must be one of {', '.join(REDIS_MODES)}, got {redis_mode!r}"
        )
    prefix = env.get("WIDGET_REDIS_PREFIX") or "ws"
    if not prefix.replace("_", "").replace("-", "").isalnum():
        raise ConfigurationError(f"WIDGET_REDIS_PREFIX must be letters, digits, - or _: {prefix!r}")
    return Settings(
        redis_url=redis_url,
        redis_mode=redis_mode,
        data_dir=data_dir,
        host=env.get("WIDGET_HOST") or "127.0.0.1",
        port=_int(env, "WIDGET_PORT", 8000, low=0, high=65535),
        workers=_int(env, "WIDGET_WORKERS", 1, low=1, high=256),
        secret_key=env.get("WIDGET_SECRET_KEY") or "",
        log_level=log_level,
        log_format=log_format,
        redis_prefix=prefix,
        max_frame_bytes=_int(env, "WIDGET_MAX_FRAME_BYTES", 16 * 1024, low=512, high=1 << 20),
        max_batch_bytes=_int(env, "WIDGET_MAX_BATCH_BYTES", 64 * 1024, low=1024, high=1 << 22),
        rate_per_second=env_float(env, "WIDGET_RATE_PER_SECOND", 20.0, low=0.1, high=10_000),
        rate_burst=_int(env, "WIDGET_RATE_BURST", 40, low=1, high=100_000),
        hello_timeout_s=env_float(env, "WIDGET_HELLO_TIMEOUT", 10.0, low=0.1, high=600),
        send_buffer_bytes=_int(
            env, "WIDGET_SEND_BUFFER_BYTES", 64 * 1024, low=4096, high=64 * 1024 * 1024
        ),
        embedded_restarts=_int(env, "WIDGET_EMBEDDED_RESTARTS", 8, low=0, high=1000),
        max_connections_per_ip=_int(env, "WIDGET_MAX_CONNECTIONS_PER_IP", 1000, low=0, high=10**7),
        max_connections_per_site=_int(env, "WIDGET_MAX_CONNECTIONS_PER_SITE", 0, low=0, high=10**7),
        max_connections=_int(env, "WIDGET_MAX_CONNECTIONS", 20000, low=0, high=10**7),
        session_ttl_s=_int(env, "WIDGET_SESSION_TTL", 30 * 60, low=10, high=7 * 24 * 3600),
        profile_ttl_s=_int(
            env, "WIDGET_PROFILE_TTL", 180 * 24 * 3600, low=3600, high=5 * 365 * 24 * 3600
        ),
        offer_seen_timeout_s=_int(env, "WIDGET_OFFER_SEEN_TIMEOUT", 120, low=5, high=3600),
        heartbeat_s=_int(env, "WIDGET_HEARTBEAT", 25, low=1, high=600),
        demo=_bool(env, "WIDGET_DEMO", False),
        country_header=(env.get("WIDGET_COUNTRY_HEADER") or "cf-ipcountry").lower(),
        consent_country_header=_header_name(env, "WIDGET_CONSENT_COUNTRY_HEADER"),
    )


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces ``settings`` in a worker process."""
    env = {
        "WIDGET_DATA_DIR": str(settings.data_dir),
        "WIDGET_HOST": settings.host,
        "WIDGET_PORT": str(settings.port),
        "WIDGET_WORKERS": str(settings.workers),
        "WIDGET_SECRET_KEY": settings.secret_key,
        "WIDGET_LOG_LEVEL": settings.log_level,
        "WIDGET_LOG_FORMAT": settings.log_format,
        "WIDGET_REDIS_PREFIX": settings.redis_prefix,
        "WIDGET_MAX_FRAME_BYTES": str(settings.max_frame_bytes),
        "WIDGET_MAX_BATCH_BYTES": str(settings.max_batch_bytes),
        "WIDGET_RATE_PER_SECOND": str(settings.rate_per_second),
        "WIDGET_RATE_BURST": str(settings.rate_burst),
        "WIDGET_HELLO_TIMEOUT": str(settings.hello_timeout_s),
        "WIDGET_SEND_BUFFER_BYTES": str(settings.send_buffer_bytes),
        "WIDGET_SESSION_TTL": str(settings.session_ttl_s),
        "WIDGET_PROFILE_TTL": str(settings.profile_ttl_s),
        "WIDGET_HEARTBEAT": str(settings.heartbeat_s),
        "WIDGET_OFFER_SEEN_TIMEOUT": str(settings.offer_seen_timeout_s),
        "WIDGET_DEMO": "1" if settings.demo else "0",
        "WIDGET_COUNTRY_HEADER": settings.country_header,
        "WIDGET_CONSENT_COUNTRY_HEADER": settings.consent_country_header,
        "WIDGET_EMBEDDED_RESTARTS": str(settings.embedded_restarts),
        "WIDGET_MAX_CONNECTIONS_PER_IP": str(settings.max_connections_per_ip),
        "WIDGET_MAX_CONNECTIONS_PER_SITE": str(settings.max_connections_per_site),
        "WIDGET_MAX_CONNECTIONS": str(settings.max_connections),
        "WIDGET_REDIS_MODE": settings.redis_mode,
    }
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    return env


def log_level_number(settings: Settings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level.upper()]
