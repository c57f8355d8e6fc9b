"""Simulator settings: the fault/pacing knobs, their validation, and CLI/env parsing.

One set of validators checks flags, ``MEGAROUTER_SIM_*`` environment values
and ``/_sim/config`` updates, so all three accept exactly the same values.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "MEGAROUTER_SIM_"
DEFAULT_MODELS = "sim-small,sim-medium,sim-large"
OUTAGE_MODES = ("none", "503", "reset")
WIRES = ("openai", "azure", "anthropic", "gemini")


class SettingError(ValueError):
    """A bad setting value or name; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class SimSettings:
    """Fault and pacing knobs; replaced as a whole on each control update."""

    latency_ms: float = 0
    ttft_ms: float = 0
    tokens_per_second: float = 0
    reply_tokens: int = 16
    error_rate: float = 0
    error_status: int = 500
    rate_limit_rate: float = 0
    retry_after_s: float = 1
    outage: str = "none"
    stall_after_chunks: int = -1
    seed: int | None = None
    # Context window in tokens (prompt estimate plus requested output); 0 is unlimited.
    context_window: int = 0
    # Answer 500 to any request whose body contains this text: a provider bug that one
    # particular input triggers ("" = none).
    fail_on_text: str = ""

    def __post_init__(self) -> None:
        for name, (check, _) in _FIELDS.items():
            setattr(self, name, check(name, getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any]) -> SimSettings:
        """A copy with ``changes`` applied; raises SettingError and changes nothing on error."""
        for name in changes:
            if name not in _FIELDS:
                raise SettingError(name, f"unknown setting {name!r}")
        return dataclasses.replace(self, **changes)


def _number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingError(name, f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise SettingError(name, f"{name} must be between {low} and {high}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(name, f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SettingError(name, f"{name} must be between {low} and {high}, got {value!r}")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise SettingError(name, f"{name} must be a string of at most 200 characters, got {value!r}")
    return value


def _outage(name: str, value: Any) -> str:
    if value not in OUTAGE_MODES:
        raise SettingError(name, f"{name} must be one of {', '.join(OUTAGE_MODES)}, got {value!r}")
    return value


def _seed(name: str, value: Any) -> int | None:
    return None if value is None else _integer(name, value, -(2**63))


def _parse_seed(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none") else int(text)


def _parse_wire(text: str) -> str:
    # A type function (not just `choices`) so a bad MEGAROUTER_SIM_WIRE is
    # rejected too: argparse never checks defaults against `choices`.
    wire = text.strip().lower()
    if wire not in WIRES:
        raise argparse.ArgumentTypeError(f"wire must be one of {', '.join(WIRES)}, got {text!r}")
    return wire


# name -> (validator, argparse type). The validator is also what checks
# control-plane updates, so CLI, env and HTTP share one set of rules.
_FIELDS: dict[str, tuple[Any, Any]] = {
    "latency_ms": (lambda n, v: _number(n, v, 0), float),
    "ttft_ms": (lambda n, v: _number(n, v, 0), float),
    "tokens_per_second": (lambda n, v: _number(n, v, 0), float),
    "reply_tokens": (lambda n, v: _integer(n, v, 0), int),
    "error_rate": (lambda n, v: _number(n, v, 0, 1), float),
    "error_status": (lambda n, v: _integer(n, v, 400, 599), int),
    "rate_limit_rate": (lambda n, v: _number(n, v, 0, 1), float),
    "retry_after_s": (lambda n, v: _number(n, v, 0), float),
    "outage": (_outage, str),
    "stall_after_chunks": (lambda n, v: _integer(n, v, -1), int),
    "seed": (_seed, _parse_seed),
    "context_window": (lambda n, v: _integer(n, v, 0), int),
    "fail_on_text": (lambda n, v: _text(n, v), str),
}


def _env(name: str, default: Any) -> Any:
    # argparse runs string defaults through the option's type, so env values
    # are converted and checked exactly like flags, and a flag still wins.
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags; each also reads ``MEGAROUTER_SIM_<NAME>`` from the env."""
    parser.add_argument("--host", default=_env("host", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=_env("port", 0),
                        help="0 lets the OS pick; the ready line reports it")
    parser.add_argument("--name", default=_env("name", "sim"))
    parser.add_argument("--models", default=_env("models", DEFAULT_MODELS),
                        help="comma-separated model ids served")
    parser.add_argument("--api-key", default=_env("api_key", None),
                        help="require this key, sent the way the wire format's provider expects")
    parser.add_argument("--wire", type=_parse_wire, choices=WIRES, default=_env("wire", "openai"),
                        help="provider wire format this instance speaks")
    defaults = SimSettings()
    for field in dataclasses.fields(SimSettings):
        _, arg_type = _FIELDS[field.name]
        flag = "--" + field.name.replace("_", "-")
        extra = {"choices": OUTAGE_MODES} if field.name == "outage" else {}
        parser.add_argument(flag, type=arg_type, default=_env(field.name,
                            getattr(defaults, field.name)), **extra)


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    return SimSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimSettings)})
