"""Simulator settings: the fault/pacing knobs, their validation, and CLI/env parsing.

One set of validators checks flags, ``MEGAROUTER_SIM_*`` environment values
and ``/_sim/config`` updates, so all three accept exactly the same values.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "MEGAROUTER_SIM_"
DEFAULT_MODELS = "sim-small,sim-medium,sim-large"
OUTAGE_MODES = ("none", "503", "reset")
WIRES = ("openai", "azure", "anthropic", "gemini", "bedrock", "vertex")
# Bedrock Runtime errors that can be sent inside a ConverseStream (``stream_error_status``), by HTTP status.
STREAM_ERROR_STATUSES = (400, 424, 429, 500, 503)


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
    # A stream that fails after this many content chunks with an error sent *inside* the
    # stream (after a 200), of the kind ``stream_error_status`` names; -1 = never. Only the
    # Bedrock wire sends in-stream errors so far (its event-stream exception frames).
    stream_error_after_chunks: int = -1
    stream_error_status: int = 424
    # The AWS credentials the Bedrock wire accepts in SigV4 signatures ("" key = none; the
    # other wires ignore these). A session token makes them temporary credentials: requests
    # must carry it, and ``aws_session_token_expired`` makes AWS's ExpiredTokenException the
    # answer. Changing them through /_sim/config rotates the keys at run time.
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    aws_session_token: str = ""
    aws_session_token_expired: bool = False
    aws_region: str = "us-east-1"
    # Google Vertex AI (the Vertex wire; the others ignore these). Model paths must name this
    # project ("" = any) and location ("" = any, else e.g. us-central1 or global). The
    # service-account key file (Google's JSON) whose public key verifies the JWTs traded at
    # POST /token for access tokens ("" = no grants: only --api-key works as a bearer token);
    # tokens granted live vertex_token_ttl_s seconds. Setting vertex_revoke_tokens is a one-shot
    # action: every token issued so far is forgotten, and the setting reads back false.
    vertex_project: str = ""
    vertex_location: str = ""
    vertex_service_account_file: str = ""
    vertex_token_ttl_s: int = 3600
    vertex_revoke_tokens: bool = False

    def __post_init__(self) -> None:
        for name, (check, _) in _FIELDS.items():
            setattr(self, name, check(name, getattr(self, name)))
        # A key without its secret could never verify a signature: refuse it up front.
        if self.aws_access_key_id and not self.aws_secret_access_key:
            raise SettingError("aws_secret_access_key", "aws_secret_access_key is required with aws_access_key_id")

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


def _credential(name: str, value: Any, pattern: str, limit: int) -> str:
    # Credentials have no surrounding whitespace or odd characters in AWS; a
    # stray newline from a shell variable is a mistake worth reporting early.
    if not isinstance(value, str) or len(value) > limit or (value and not re.fullmatch(pattern, value)):
        raise SettingError(name, f"{name} must be a string of at most {limit} characters matching {pattern}")
    return value


def _service_account_file(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 4096:
        raise SettingError(name, f"{name} must be a file path of at most 4096 characters, got {value!r}")
    if value:
        # Imported here: only the Vertex wire needs cryptography, and only when a file is named.
        from megarouter.sim.google_oauth import load_service_account

        try:
            load_service_account(value)
        except ValueError as exc:
            raise SettingError(name, f"{name}: {exc}") from None
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingError(name, f"{name} must be true or false, got {value!r}")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return lowered in ("true", "1", "yes")


def _stream_error_status(name: str, value: Any) -> int:
    status = _integer(name, value, 400, 599)
    if status not in STREAM_ERROR_STATUSES:
        raise SettingError(name, f"{name} must be one of {', '.join(map(str, STREAM_ERROR_STATUSES))}, got {value!r}")
    return status


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
    "stream_error_after_chunks": (lambda n, v: _integer(n, v, -1), int),
    "stream_error_status": (_stream_error_status, int),
    "aws_access_key_id": (lambda n, v: _credential(n, v, r"[A-Za-z0-9]+", 128), str),
    "aws_secret_access_key": (lambda n, v: _credential(n, v, r"[A-Za-z0-9+/=]+", 128), str),
    # STS session tokens are long (often over 1000 characters) base64 text.
    "aws_session_token": (lambda n, v: _credential(n, v, r"[A-Za-z0-9+/=]+", 4096), str),
    "aws_session_token_expired": (_boolean, _parse_bool),
    "aws_region": (lambda n, v: _credential(n, v, r"[a-z]{2}(-[a-z]+)+-[0-9]+", 32), str),
    # A project id (6-30 lower-case letters, digits and hyphens) or a project number.
    "vertex_project": (lambda n, v: _credential(n, v, r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}", 30), str),
    "vertex_location": (lambda n, v: _credential(n, v, r"global|us|eu|[a-z]+-[a-z]+[0-9]+", 32), str),
    "vertex_service_account_file": (_service_account_file, str),
    "vertex_token_ttl_s": (lambda n, v: _integer(n, v, 1, 86400), int),
    "vertex_revoke_tokens": (_boolean, _parse_bool),
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
