"""What gets into the HTTP API: the JSON error shape, request-body limits, the bounded question queue, one turn
at a time per chat thread, and who may write without a key."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from config import Settings

# -- errors -----------------------------------------------------------------------------------------------------


def error_body(
    status: int, message: str, kind: str, param: str | None = None, code: int | str | None = None
) -> dict[str, Any]:
    """The one error shape, OpenAI's: message, type, param (the request field at fault, or null) and code (the
    HTTP status unless a more precise one is given, e.g. "model_not_found")."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status if code is None else code}}


class QueueFull(HTTPException):
    def __init__(self, retry_after: int, outstanding: int) -> None:
        super().__init__(
            429,
            f"the server is answering {outstanding} questions, its limit; retry in about {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
        self.outstanding = outstanding


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit:,} bytes")


class BodyLimit:
    """Refuses request bodies over a per-path limit: at once from Content-Length, else while reading them."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = BodyTooLarge(limit)
            response = JSONResponse(error_body(413, str(error.detail), "too_large"), status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # FastAPI passes HTTPExceptions from body parsing through
            return message

        await self.app(scope, counted, send)


# -- admission: bounded concurrency for generation ----------------------------------------------------------


class GenerationGate:
    """`workers` questions run at once; `queue` more may wait; past that, QueueFull (429)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers, self.limit = workers, workers + queue
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="trellis-answer")
        self.outstanding = 0  # touched only on the event loop
        self.seconds: deque[float] = deque([1.0], maxlen=32)
        self.answered = self.refused = 0

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead at the recent answering rate."""
        average = sum(self.seconds) / len(self.seconds)
        return max(1, math.ceil(average * (self.outstanding - self.workers + 1) / self.workers))

    def submit(self, work: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `work` on a worker thread; the future completes even if the client has gone."""
        if self.outstanding >= self.limit:
            self.refused += 1
            raise QueueFull(self.retry_after(), self.outstanding)
        self.outstanding += 1

        def timed() -> Any:
            started = time.perf_counter()
            try:
                return work()
            finally:
                self.seconds.append(time.perf_counter() - started)

        future = asyncio.get_running_loop().run_in_executor(self.executor, timed)
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: asyncio.Future[Any]) -> None:
        self.outstanding -= 1
        self.answered += 1

    def state(self) -> dict[str, int]:
        return {
            "workers": self.workers,
            "limit": self.limit,
            "outstanding": self.outstanding,
            "answered": self.answered,
            "refused": self.refused,
        }


# -- one turn at a time per chat thread --------------------------------------------------------------------


class ThreadBusy(HTTPException):
    def __init__(self, thread_id: str, reason: str, retry_after: int) -> None:
        super().__init__(
            409, f"thread_id: {thread_id!r} {reason}; retry in about {retry_after} s", {"Retry-After": str(retry_after)}
        )


class TurnLocks:
    """Serialises the turns of each chat thread: a turn reads the thread's checkpoint and writes it back, so two
    at once would lose one. Waiting happens on the event loop, before a worker is taken; a thread's lock lives
    only while a turn holds it or waits for it, so the table stays as small as the turns in flight."""

    def __init__(self, max_waiting: int, wait_s: float) -> None:
        self.max_waiting, self.wait_s = max_waiting, wait_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # turns holding or waiting for each thread's lock

    def __len__(self) -> int:
        return len(self._locks)

    async def acquire(self, thread_id: str) -> None:
        """Wait for the thread's turn, at most `wait_s`; ThreadBusy (409) past that or with too many waiting."""
        users = self._users.get(thread_id, 0)
        if users > self.max_waiting:
            raise ThreadBusy(thread_id, f"already has {users} turns running or waiting", math.ceil(self.wait_s))
        lock = self._locks.setdefault(thread_id, asyncio.Lock())
        self._users[thread_id] = users + 1
        try:
            await asyncio.wait_for(lock.acquire(), self.wait_s)
        except TimeoutError:
            self._forget(thread_id)
            raise ThreadBusy(thread_id, "is still answering an earlier turn", math.ceil(self.wait_s)) from None
        except BaseException:  # the request was cancelled while waiting
            self._forget(thread_id)
            raise

    def release(self, thread_id: str) -> None:
        """End the thread's running turn (called on the event loop, when the turn's work has finished)."""
        self._locks[thread_id].release()
        self._forget(thread_id)

    def _forget(self, thread_id: str) -> None:
        left = self._users[thread_id] - 1
        if left:
            self._users[thread_id] = left
        else:
            del self._users[thread_id], self._locks[thread_id]


# -- who is writing: this machine, and this server's own pages ----------------------------------------------

FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> Address | None:
    """An address as forwarding headers and peers write it: bare, quoted, with a port, IPv6 in brackets."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None  # a name, "unknown", an obfuscated identifier: not an address we can vouch for


def forwarded_clients(headers: Headers) -> list[str]:
    """Every client address the forwarding headers name (Forwarded's for=, X-Forwarded-For, X-Real-IP)."""
    named: list[str] = []
    for value in headers.getlist("forwarded"):
        for pair in value.replace(",", ";").split(";"):
            key, _, address = pair.partition("=")
            if key.strip().lower() == "for":
                named.append(address)
    for value in headers.getlist("x-forwarded-for"):
        named += value.split(",")
    named += headers.getlist("x-real-ip")
    return named


class WriteOrigin:
    """Decides whether a keyless write comes from this machine, by way of this server's own pages.

    Local: the peer is a loopback address and the request carries no forwarding header, or the peer is one of
    `trusted_proxies` (and loopback) and every address its headers name is loopback too. A forwarding header
    from anyone else makes the request not local: a proxy on this machine would otherwise make every remote
    write look local. Own site: the Host header, and the Origin header when a browser sends one, name this
    server (a loopback name or the configured host, on the port the request came in on), an entry of
    `allowed_hosts`, or an origin of `cors_origins`; anything else is a cross-site write or DNS rebinding.
    """

    def __init__(self, settings: Settings) -> None:
        self.trusted = [ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies]
        configured = settings.host.lower()
        if ":" in configured and not configured.startswith("["):
            configured = f"[{configured}]"  # an IPv6 address, as a Host header writes it
        unspecified = configured in ("0.0.0.0", "[::]", "")
        self.own_names = LOOPBACK_NAMES | ({configured} if not unspecified else set())
        self.default_port = settings.port
        self.allowed: set[tuple[str, int | None]] = {self._authority(host, None) for host in settings.allowed_hosts}
        self.origins = {origin.rstrip("/").lower() for origin in settings.cors_origins}

    def is_local(self, peer: str, headers: Headers) -> bool:
        peer_ip = _ip(peer)
        if peer_ip is None or not peer_ip.is_loopback:
            return False
        if not any(name in headers for name in FORWARDING_HEADERS):
            return True
        if not any(peer_ip in network for network in self.trusted):
            return False
        named = [_ip(address) for address in forwarded_clients(headers)]
        return bool(named) and all(ip is not None and ip.is_loopback for ip in named)

    def foreign(self, scope: Scope, headers: Headers) -> str | None:
        """Why this request does not come from this server's own site, or None when it does."""
        server = scope.get("server")
        port = server[1] if server and server[1] else self.default_port
        scheme = scope.get("scheme", "http")
        host = headers.get("host", "")
        if not self._names_us(self._authority(host, DEFAULT_PORTS.get(scheme, 80)), port):
            return f"Host {host!r} is not this server (add it to TRELLIS_ALLOWED_HOSTS if it is)"
        origin = headers.get("origin")
        if origin is None or origin.rstrip("/").lower() in self.origins:
            return None
        try:
            parts = urlsplit(origin)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = None
        named = self._authority(parts.netloc, DEFAULT_PORTS.get(parts.scheme)) if parts and parts.netloc else None
        if named is None or not self._names_us(named, port):
            return f"Origin {origin!r} is not this server's (list it in TRELLIS_CORS_ORIGINS to allow it)"
        return None

    def _names_us(self, authority: tuple[str, int | None], port: int) -> bool:
        name, given = authority
        if name in self.own_names and given == port:
            return True
        return (name, given) in self.allowed or (name, None) in self.allowed

    @staticmethod
    def _authority(text: str, default_port: int | None) -> tuple[str, int | None]:
        """(lower-case name, port) of `host[:port]` or `[v6]:port`; the port is `default_port` when absent."""
        text = text.strip().lower()
        name, port = text, ""
        if text.startswith("["):
            end = text.find("]")
            name, port = text[: end + 1], text[end + 1 :].removeprefix(":")
        elif ":" in text:
            name, _, port = text.rpartition(":")
        return name, int(port) if port.isdigit() else default_port
