from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AcquireRequest(_message.Message):
    __slots__ = ("node_id", "budget", "want")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    WANT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    budget: str
    want: float
    def __init__(self, node_id: _Optional[str] = ..., budget: _Optional[str] = ..., want: _Optional[float] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("budget", "window", "granted", "remaining", "resets_at_unix_ms", "lease_ttl_s", "use_within_s", "resets_in_ms")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    USE_WITHIN_S_FIELD_NUMBER: _ClassVar[int]
    RESETS_IN_MS_FIELD_NUMBER: _ClassVar[int]
    budget: str
    window: str
    granted: float
    remaining: float
    resets_at_unix_ms: int
    lease_ttl_s: float
    use_within_s: float
    resets_in_ms: int
    def __init__(self, budget: _Optional[str] = ..., window: _Optional[str] = ..., granted: _Optional[float] = ..., remaining: _Optional[float] = ..., resets_at_unix_ms: _Optional[int] = ..., lease_ttl_s: _Optional[float] = ..., use_within_s: _Optional[float] = ..., resets_in_ms: _Optional[int] = ...) -> None: ...

class Settlement(_message.Message):
    __slots__ = ("budget", "window", "consumed", "released")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    budget: str
    window: str
    consumed: float
    released: float
    def __init__(self, budget: _Optional[str] = ..., window: _Optional[str] = ..., consumed: _Optional[float] = ..., released: _Optional[float] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("node_id", "settlements")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENTS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    settlements: _containers.RepeatedCompositeFieldContainer[Settlement]
    def __init__(self, node_id: _Optional[str] = ..., settlements: _Optional[_Iterable[_Union[Settlement, _Mapping]]] = ...) -> None: ...

class SettlementRefusal(_message.Message):
    __slots__ = ("budget", "window", "reason")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    budget: str
    window: str
    reason: str
    def __init__(self, budget: _Optional[str] = ..., window: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SettleAck(_message.Message):
    __slots__ = ("refused",)
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    refused: _containers.RepeatedCompositeFieldContainer[SettlementRefusal]
    def __init__(self, refused: _Optional[_Iterable[_Union[SettlementRefusal, _Mapping]]] = ...) -> None: ...
