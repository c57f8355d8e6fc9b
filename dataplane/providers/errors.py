"""Error helpers shared by adapters: status classification, Retry-After."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import datetime

from dataplane.providers.base import ErrorClass

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")


def class_for_status(status: int) -> ErrorClass:
    """The default meaning of an HTTP status from any provider."""
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if status in (401, 403, 404):
        return ErrorClass.ENDPOINT
    if status in (408, 409) or status >= 500:  # 529 (Anthropic overloaded) included
        return ErrorClass.RETRYABLE
    return ErrorClass.INVALID_REQUEST


def parse_duration(text: str) -> float | None:
    """'20', '1.5', '6m0s', '250ms', '1h2m3s' -> seconds."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from any of the header styles providers use.

    `retry-after-ms` (OpenAI, Azure), `Retry-After` as seconds or an HTTP
    date (RFC 9110), OpenAI's `x-ratelimit-reset-requests` / `-tokens`
    durations ("6m0s"), and Anthropic's RFC 3339 `anthropic-ratelimit-*-reset`.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    if "retry-after" in lowered:
        value = lowered["retry-after"]
        seconds = parse_duration(value)
        if seconds is not None:
            return seconds
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - (now if now is not None else time.time()))
        except (TypeError, ValueError):
            pass
    resets = [parse_duration(lowered[h]) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
              if h in lowered]
    resets = [r for r in resets if r is not None]
    if resets:
        return max(resets)
    for header in ("anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset"):
        if header in lowered:
            try:
                when = datetime.fromisoformat(lowered[header].replace("Z", "+00:00"))
            except ValueError:
                continue
            return max(0.0, when.timestamp() - (now if now is not None else time.time()))
    return None
