"""One aiohttp session per event loop and connection, shared by every async hook of that connection.

A triggerer runs thousands of triggers in one event loop. Each :class:`SmartFlowsAsyncHook` used
to open its own ``ClientSession``, connector and socket, and to look its connection up; here the
hooks of one connection share one session (and so one keep-alive pool) and one cached lookup:

- **Keyed by the connection's settings.** A session serves one ``(conn id, base URL, TLS verify,
  API key)``: a changed key or URL gets a new session, and the old one closes when its last user
  leaves. The key enters the registry only as a keyed hash (:class:`SessionKey`), never in clear.
- **Reference-counted.** Created on first use (:func:`acquire_session`), closed when the last
  user leaves (:meth:`SessionLease.release`).
- **Per loop.** The registry is a ``WeakKeyDictionary`` keyed by the running loop: a session is
  never used from another loop, and nothing of it outlives its loop.
- **Pool sized for parked long-polls.** Every waiting trigger keeps one long-poll open, so the
  pool must not queue them. Its limit is the ``[smartflows] max_connections_per_session`` option,
  or by default the process's soft open-files limit less 256 (kept for the triggerer's own files,
  database and log connections): a long-poll past that limit waits for a free connection instead
  of failing with "too many open files". Raise ``ulimit -n`` for more parked waits than that.
- **Long-polls capped** at ``[smartflows] max_long_poll_seconds`` (default 3600, the hooks'
  own limit): see :func:`max_long_poll_seconds`. The options are read once per event loop.
- **Connection lookups cached** for ``[smartflows] connection_cache_seconds`` (default 30):
  a thousand triggers starting at once make one lookup, and a changed connection is seen
  within that time (at once after a refused key: the hook then looks the connection up again).

A task cancelled in the middle of a request leaves the session usable: aiohttp closes that one
connection, the pool and the other requests carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import resource
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp

from airflow_provider_smartflows.hooks.inputs import MAX_WAIT_SECONDS

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Awaitable, Callable

    from airflow_provider_smartflows.hooks.connection import ConnectionSettings

#: Seconds a connection lookup is reused (``[smartflows] connection_cache_seconds``).
DEFAULT_CONNECTION_CACHE_SECONDS = 30.0
#: Open files left to the rest of the process when the pool is sized from the open-files limit.
RESERVED_FILES = 256
MIN_POOL = 64

# A per-process secret: the fingerprint of an API key cannot be checked against guessed keys
# outside this process.
_FINGERPRINT_SECRET = os.urandom(32)


def _option(name: str, default: float) -> float:
    try:
        from airflow.providers.common.compat.sdk import conf

        return float(conf.getfloat("smartflows", name, fallback=default))
    except Exception:  # no Airflow configuration (a script): the default
        return default


def max_long_poll_seconds() -> float:
    """The longest long-poll any async hook of this loop sends (``[smartflows] max_long_poll_seconds``).

    The API guide documents ``timeout`` (default 30 s) but no maximum; set this below the idle
    timeout of a proxy or load balancer between Airflow and Smart Flows that cuts quiet
    connections. A shorter poll only means one more request: the wait goes on.
    """
    return _registry().max_long_poll_seconds


def connection_cache_seconds() -> float:
    """How long this loop reuses a connection lookup (``[smartflows] connection_cache_seconds``; 0: off)."""
    return _registry().connection_cache_seconds


def pool_limit() -> int:
    """Connections one shared session may hold (0: no limit), see the module docstring."""
    configured = int(_option("max_connections_per_session", 0))
    if configured > 0:
        return configured
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(MIN_POOL, soft - RESERVED_FILES)


def key_fingerprint(api_key: str) -> str:
    """A keyed hash of the API key: tells keys apart, reveals nothing of them."""
    return hmac.new(_FINGERPRINT_SECRET, api_key.encode(), hashlib.sha256).hexdigest()[:16]


class SessionKey(NamedTuple):
    """What one shared session serves; the API key only as :func:`key_fingerprint`."""

    conn_id: str
    base_url: str
    verify: bool | str
    key_fingerprint: str

    @classmethod
    def of(cls, settings: ConnectionSettings) -> SessionKey:
        return cls(settings.conn_id, settings.base_url, settings.verify, key_fingerprint(settings.api_key))


@dataclass
class _Shared:
    session: aiohttp.ClientSession
    users: int = 0


@dataclass
class _LoopRegistry:
    """The shared sessions and cached connection lookups of one event loop.

    The options are read once per loop (a triggerer reads them when it starts): reading Airflow's
    configuration costs tens of microseconds, too much for every hook of ten thousand waits.
    """

    connection_cache_seconds: float = field(
        default_factory=lambda: max(
            0.0, _option("connection_cache_seconds", DEFAULT_CONNECTION_CACHE_SECONDS)
        )
    )
    max_long_poll_seconds: float = field(
        default_factory=lambda: min(
            float(MAX_WAIT_SECONDS), max(1.0, _option("max_long_poll_seconds", MAX_WAIT_SECONDS))
        )
    )
    sessions: dict[SessionKey, _Shared] = field(default_factory=dict)
    settings: dict[tuple[str, float | None], tuple[float, ConnectionSettings]] = field(default_factory=dict)
    # Locks and closing tasks are bound to the loop: each is dropped once done, so that no value
    # of the weak registry keeps its loop alive.
    locks: dict[Any, list[Any]] = field(default_factory=dict)  # key -> [asyncio.Lock, holders]
    closing: set[asyncio.Task[None]] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def locked(self, key: Any) -> AsyncIterator[None]:
        """Hold this loop's lock of ``key``; the lock is forgotten when nobody holds or awaits it."""
        entry = self.locks.get(key)
        if entry is None:
            entry = self.locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self.locks[key]


_REGISTRIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopRegistry] = weakref.WeakKeyDictionary()


def _registry() -> _LoopRegistry:
    loop = asyncio.get_running_loop()
    registry = _REGISTRIES.get(loop)
    if registry is None:
        registry = _REGISTRIES[loop] = _LoopRegistry()
    return registry


async def cached_settings(
    conn_id: str, timeout: float | None, lookup: Callable[[], Awaitable[ConnectionSettings]]
) -> ConnectionSettings:
    """The settings of ``conn_id`` (with the hook's ``timeout`` override) from this loop's cache,
    or from ``lookup()`` when missing or older than :func:`connection_cache_seconds`.

    Concurrent callers of one connection wait for one lookup; a failed lookup is not cached.
    """
    registry = _registry()
    key = (conn_id, timeout)
    ttl = registry.connection_cache_seconds
    cached = registry.settings.get(key)
    if cached is not None and time.monotonic() < cached[0]:
        return cached[1]
    async with registry.locked(key):
        cached = registry.settings.get(key)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        settings = await lookup()
        if ttl > 0:
            registry.settings[key] = (time.monotonic() + ttl, settings)
        return settings


def forget_settings(conn_id: str | None = None, *, stale: ConnectionSettings | None = None) -> None:
    """Drop this loop's cached lookups (of ``conn_id``, or all; with ``stale``, only the entries
    holding that very object, so that many hooks dropping one stale entry drop no fresh one)."""
    registry = _registry()
    for key, (_expiry, settings) in list(registry.settings.items()):
        if (conn_id is None or key[0] == conn_id) and (stale is None or settings is stale):
            del registry.settings[key]


class SessionLease:
    """One user's hold on a shared session; :meth:`release` it exactly once."""

    __slots__ = ("_registry", "key", "released", "session")

    def __init__(self, registry: _LoopRegistry, key: SessionKey, session: aiohttp.ClientSession) -> None:
        self._registry = registry
        self.key = key
        self.session = session
        self.released = False

    async def release(self) -> None:
        """Leave the session; the last user to leave closes it."""
        if self.released:
            return
        self.released = True
        shared = self._registry.sessions.get(self.key)
        if shared is None or shared.session is not self.session:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del self._registry.sessions[self.key]
        # Shielded: a user cancelled while leaving must not leave the session half closed.
        task = asyncio.ensure_future(self.session.close())
        self._registry.closing.add(task)
        task.add_done_callback(self._registry.closing.discard)
        await asyncio.shield(task)


async def acquire_session(
    settings: ConnectionSettings, ssl_option: Callable[[], Awaitable[ssl.SSLContext | bool]]
) -> SessionLease:
    """Join (or open) this loop's session for ``settings``; ``ssl_option`` is awaited only to open one."""
    registry = _registry()
    key = SessionKey.of(settings)
    shared = registry.sessions.get(key)
    if shared is None:
        async with registry.locked(key):
            shared = registry.sessions.get(key)
            if shared is None:
                connector = aiohttp.TCPConnector(limit=pool_limit(), limit_per_host=0, ssl=await ssl_option())
                session = aiohttp.ClientSession(
                    headers=settings.headers, connector=connector, raise_for_status=False
                )
                shared = registry.sessions[key] = _Shared(session)
    shared.users += 1
    return SessionLease(registry, key, shared.session)


@dataclass(frozen=True)
class SharedSessionInfo:
    """What :func:`shared_sessions` reports of one session (no secret in it)."""

    key: SessionKey
    users: int
    closed: bool
    connections_limit: int


def shared_sessions() -> list[SharedSessionInfo]:
    """The shared sessions of the running loop: for tests, metrics and debugging."""
    return [
        SharedSessionInfo(key, shared.users, shared.session.closed, shared.session.connector.limit)  # type: ignore[union-attr]
        for key, shared in _registry().sessions.items()
    ]


def loops_with_sessions() -> int:
    """How many live event loops have a registry (a closed, collected loop has none)."""
    return len(_REGISTRIES)
