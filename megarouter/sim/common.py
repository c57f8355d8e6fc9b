"""Per-app state and small HTTP helpers shared by the server and every wire format."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
from aiohttp import web

from megarouter.sim.settings import SimSettings

# Stats kinds, counted by the gate before the handler runs (so a request that
# then fails validation or a fault still counts as the kind of call it was).
CHAT = "chat"
EMBEDDING = "embedding"
COMPLETION = "completion"
RESPONSES = "responses"


class SimState:
    """Per-app mutable state: current settings, random source and counters."""

    def __init__(self, settings: SimSettings, name: str, models: list[str],
                 api_key: str | None, wire: str) -> None:
        self.settings = settings
        self.name = name
        self.models = list(models)
        self.model_set = frozenset(models)
        self.api_key = api_key.encode() if api_key else None
        self.wire = wire
        self.created = int(time.time())
        self.closing = False
        self.rng = random.Random(settings.seed)
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = 0
        self.chat_requests = 0
        self.stream_requests = 0
        self.embedding_requests = 0
        self.completion_requests = 0
        self.responses_requests = 0
        # Responses API requests answered with store not false (the API's default is true).
        self.responses_stored = 0
        # Requests refused for their credentials (counted by the Bedrock and Vertex wires): lets a
        # test assert that a client with bad credentials gave up instead of retrying.
        self.auth_failures = 0
        # Google OAuth token endpoint (the Vertex wire's /token): access tokens granted, and
        # grants refused (a bad signature, an unknown account...).
        self.token_grants = 0
        self.token_refusals = 0
        self.by_status: dict[str, int] = {}

    def count_kind(self, kind: str | None) -> None:
        if kind == CHAT:
            self.chat_requests += 1
        elif kind == EMBEDDING:
            self.embedding_requests += 1
        elif kind == COMPLETION:
            self.completion_requests += 1
        elif kind == RESPONSES:
            self.responses_requests += 1

    def count(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"requests": self.requests, "chat_requests": self.chat_requests,
                                 "by_status": self.by_status, "stream_requests": self.stream_requests}
        # The newer counters appear once used: existing consumers compare the
        # whole stats object, and chat-only runs should look as they always did.
        if self.embedding_requests:
            stats["embedding_requests"] = self.embedding_requests
        if self.completion_requests:
            stats["completion_requests"] = self.completion_requests
        if self.responses_requests:
            stats["responses_requests"] = self.responses_requests
        if self.responses_stored:
            stats["responses_stored"] = self.responses_stored
        if self.auth_failures:
            stats["auth_failures"] = self.auth_failures
        if self.token_grants:
            stats["token_grants"] = self.token_grants
        if self.token_refusals:
            stats["token_refusals"] = self.token_refusals
        return stats


STATE = web.AppKey("megarouter_sim_state", SimState)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or None when it is not valid JSON."""
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None


def is_int(value: Any, low: int = 1) -> bool:
    """A JSON integer (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
