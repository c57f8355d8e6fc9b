"""Server-side AWS Signature Version 4 checks, for the simulated Bedrock endpoint.

The signature is recomputed with botocore's own signer (``SigV4Auth``): the
same code the AWS SDK for Python signs with, so the simulator and a botocore
client can only agree if the client really produced what AWS expects. The
server's part, which botocore does not have, is choosing *what* to
canonicalise: the method, path and query exactly as received (still
percent-encoded), only the headers the client lists in ``SignedHeaders``, and
the exact body bytes.

Two details that trip hand-written clients, both reproduced faithfully:

- The canonical URI is the received path URI-encoded *again* (botocore's
  ``_normalize_url_path``; every service but S3). A model id sent as
  ``anthropic.claude-v2%3A1`` is canonicalised as ``anthropic.claude-v2%253A1``.
  A client that signs one spelling of the path and sends another (an HTTP
  library re-quoting ``%3A`` to ``:``) is refused, as AWS refuses it.
- The credential scope must name the configured region and the service
  ``bedrock`` (Bedrock Runtime's signing name, not its endpoint prefix).

Refusals are returned as (AWS error name, message) so the wire can render them
in its error shape; the messages follow what AWS front ends answer.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from multidict import CIMultiDictProxy, MultiMapping

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_S = 5 * 60          # AWS rejects an X-Amz-Date further than this from its clock
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

MISSING_TOKEN = "MissingAuthenticationTokenException"
INCOMPLETE = "IncompleteSignatureException"
INVALID_SIGNATURE = "InvalidSignatureException"
UNRECOGNIZED_CLIENT = "UnrecognizedClientException"
EXPIRED_TOKEN = "ExpiredTokenException"

_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
             "Secret Access Key and signing method. Consult the service documentation for details.")
_INVALID_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True)
class Accepted:
    """The one set of credentials the simulator accepts (an IAM user's key, or temporary credentials)."""

    access_key_id: str
    secret_access_key: str
    session_token: str = ""           # set for temporary (STS) credentials: requests must carry it
    session_token_expired: bool = False
    region: str = "us-east-1"
    service: str = "bedrock"


@dataclass(frozen=True)
class Refusal:
    error_type: str   # AWS's error name, e.g. "InvalidSignatureException"
    message: str


@dataclass(frozen=True)
class _Authorization:
    credential: str
    signed_headers: list[str]
    signature: str


def verify(method: str, raw_path: str, headers: MultiMapping[str] | CIMultiDictProxy[str], body: bytes,
           accepted: Accepted, now: float | None = None) -> Refusal | None:
    """None when the request carries a valid SigV4 signature by ``accepted``; else why not.

    ``raw_path`` is the request target as received (path and query, not
    decoded); ``headers`` the received headers (case-insensitive, repeats kept).
    """
    header = headers.get("Authorization", "")
    if not header:
        return Refusal(MISSING_TOKEN, "Missing Authentication Token")
    auth = _parse(header)
    if isinstance(auth, Refusal):
        return auth
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, TIMESTAMP_FORMAT))
    except ValueError:
        return Refusal(INCOMPLETE, "Authorization header requires existence of either a 'X-Amz-Date' or a "
                                   "'Date' header. Authorization=" + ALGORITHM)

    scope = auth.credential.split("/")
    if len(scope) != 5:
        return Refusal(INCOMPLETE, "Credential should have exactly 5 slash-delimited elements, e.g. "
                                   f"keyid/date/region/service/term, got '{auth.credential}'")
    key_id, date, region, service, terminator = scope
    # AWS resolves the key before it looks at the signature: an unknown key
    # (or a token that does not belong to it) is "invalid", not "mismatched".
    if not hmac.compare_digest(key_id.encode(), accepted.access_key_id.encode()):
        return Refusal(UNRECOGNIZED_CLIENT, _INVALID_TOKEN)
    token = headers.get("X-Amz-Security-Token", "")
    if not hmac.compare_digest(token.encode(), accepted.session_token.encode()):
        # Temporary credentials without their token, a wrong token, or a
        # token sent with a long-term key.
        return Refusal(UNRECOGNIZED_CLIENT, _INVALID_TOKEN)
    if accepted.session_token and accepted.session_token_expired:
        return Refusal(EXPIRED_TOKEN, "The security token included in the request is expired")

    if date != amz_date[:8]:
        return Refusal(INVALID_SIGNATURE, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
                                          f"of date from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'.")
    if region != accepted.region:
        return Refusal(INVALID_SIGNATURE, f"Credential should be scoped to a valid region, not '{region}'. ")
    if service != accepted.service:
        return Refusal(INVALID_SIGNATURE, f"Credential should be scoped to correct service: '{accepted.service}'. ")
    if terminator != "aws4_request":
        return Refusal(INVALID_SIGNATURE, "Credential should be scoped with a valid terminator: 'aws4_request', "
                                          f"not '{terminator}'. ")

    clock = time.time() if now is None else now
    if signed_at < clock - MAX_SKEW_S:
        return Refusal(INVALID_SIGNATURE, f"Signature expired: {amz_date} is now earlier than "
                                          f"{_stamp(clock - MAX_SKEW_S)} ({_stamp(clock)} - 5 min.)")
    if signed_at > clock + MAX_SKEW_S:
        return Refusal(INVALID_SIGNATURE, f"Signature not yet current: {amz_date} is still later than "
                                          f"{_stamp(clock + MAX_SKEW_S)} ({_stamp(clock)} + 5 min.)")

    if "host" not in auth.signed_headers:
        return Refusal(INVALID_SIGNATURE, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    declared = headers.get("X-Amz-Content-SHA256")
    if declared is not None and declared not in (UNSIGNED_PAYLOAD, hashlib.sha256(body).hexdigest()):
        return Refusal(INVALID_SIGNATURE, "The provided 'x-amz-content-sha256' header does not match what was "
                                          "computed.")

    canonical, string_to_sign, expected = _recompute(method, raw_path, headers, body, auth, accepted, amz_date)
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        # Like AWS, say what was expected: it is how a client author finds
        # which part of the canonical request differs.
        return Refusal(INVALID_SIGNATURE, f"{_MISMATCH}\n\nThe Canonical String for this request should have "
                                          f"been\n'{canonical}'\n\nThe String-to-Sign should have been\n"
                                          f"'{string_to_sign}'\n")
    return None


def _parse(header: str) -> _Authorization | Refusal:
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        # Includes SigV4a (AWS4-ECDSA-P256-SHA256), which Bedrock Runtime does not take.
        return Refusal(INCOMPLETE, f"Authorization header requires '{ALGORITHM}' as its algorithm. "
                                   f"Authorization={header.split(' ', 1)[0]}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    missing = [name for name in ("Credential", "Signature", "SignedHeaders") if not fields.get(name)]
    if missing:
        return Refusal(INCOMPLETE, " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
                       + f" Authorization={header}")
    return _Authorization(fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"])


class _AsReceived(SigV4Auth):
    """botocore's signer, canonicalising exactly the headers the client says it signed.

    Stock ``SigV4Auth`` picks the headers itself (all but a blacklist, plus a
    ``host`` derived from the URL). A server must instead take the client's
    list: anything else on the wire (User-Agent, Accept-Encoding added by the
    HTTP library) was not signed and must not count.
    """

    def __init__(self, credentials: Credentials, service: str, region: str, signed: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        chosen = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or ():
                chosen[name] = value  # HTTPHeaders appends: repeated headers stay repeated
        return chosen


def _recompute(method: str, raw_path: str, headers: MultiMapping[str] | CIMultiDictProxy[str], body: bytes,
               auth: _Authorization, accepted: Accepted, amz_date: str) -> tuple[str, str, str]:
    """(canonical request, string to sign, signature) as the client should have computed them."""
    signed = set(auth.signed_headers)
    # Only the path and query of the URL reach the canonical request; the host
    # comes from the (signed) Host header.
    request = AWSRequest(method=method, url="http://" + headers.get("Host", "localhost") + raw_path, data=body)
    for name, value in headers.items():
        if name.lower() in signed:
            request.headers[name] = value
    request.context["timestamp"] = amz_date
    signer = _AsReceived(Credentials(accepted.access_key_id, accepted.secret_access_key,
                                     accepted.session_token or None),
                         accepted.service, accepted.region, auth.signed_headers)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    return canonical, string_to_sign, signer.signature(string_to_sign, request)


def _stamp(seconds: float) -> str:
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime(seconds))
