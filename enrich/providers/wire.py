"""One chat request over HTTP, whichever client sends it: the answer's headers and body, or an HTTPFailure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Headers = Mapping[str, str]


class HTTPFailure(Exception):
    """One failed HTTP attempt: an error status (with the server's message) or no answer at all."""

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        headers: Headers | None = None,
        body: Any = None,
        param: str | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status  # None: the connection failed or timed out
        self.message = message
        self.headers: Headers = headers if headers is not None else {}
        self.body = body
        self.param = param
        self.timed_out = timed_out

    @classmethod
    def from_answer(cls, status: int, headers: Headers, parsed: Any) -> HTTPFailure:
        """The failure an error answer describes (OpenAI's `{"error": {"message", "param", ...}}` or any body)."""
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = error.get("message") if isinstance(error, dict) else None
        param = error.get("param") if isinstance(error, dict) else None
        text = message if isinstance(message, str) and message else str(parsed or "").strip()[:500]
        return cls(status, text, headers=headers, body=error, param=param if isinstance(param, str) else None)


class Poster(Protocol):
    """Something that posts a chat request body and returns (headers, parsed JSON or text)."""

    async def post(self, body: dict[str, Any]) -> tuple[Headers, Any]:
        """Send one request; raise HTTPFailure unless the answer is 2xx."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...
