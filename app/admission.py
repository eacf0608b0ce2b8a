"""What gets into the HTTP API: the JSON error shape, request-body limits, and the bounded question queue."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# -- errors -----------------------------------------------------------------------------------------------------


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    """The one error shape (OpenAI clients read error.message)."""
    return {"error": {"message": message, "type": kind, "code": status}}


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
