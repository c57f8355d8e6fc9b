"""AWS request signing for Bedrock: SigV4 by botocore, credentials by botocore's chain.

Nothing here is hand-written crypto. botocore resolves credentials the way every AWS SDK
does — environment variables, a shared profile (`options.aws_profile`), web identity (IRSA
on EKS), ECS task roles, the instance role — and `SigV4Auth` signs each request. Temporary
credentials are refreshed by botocore before they expire; the refresh may call STS or the
instance metadata service, so it runs in a thread, never on the event loop.

A provider with no credentials to be found is not a crash: each attempt fails with
ErrorClass.ENDPOINT (the route falls back to its other endpoints), and the reason — which
sources were looked at — is logged once. Secrets are never logged; only where they came from.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ProfileNotFound

from dataplane.providers.base import ErrorClass, ProviderError

log = logging.getLogger("megarouter.proxy.aws")

# What the AWS auth layer answers when the credentials, not the request, are wrong.
AUTH_ERRORS = frozenset({"UnrecognizedClientException", "InvalidSignatureException", "SignatureDoesNotMatch",
                         "ExpiredTokenException", "IncompleteSignatureException",
                         "MissingAuthenticationTokenException", "InvalidClientTokenId"})
_BEDROCK_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_SOURCES = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or options.aws_profile, web identity " \
           "(AWS_WEB_IDENTITY_TOKEN_FILE), a container or instance role"


def bedrock_region(base_url: str, options: Mapping[str, str]) -> str:
    """The AWS region to sign for: `options.aws_region`, else the one in a
    bedrock-runtime.<region>.amazonaws.com base URL, else ""."""
    if options.get("aws_region"):
        return options["aws_region"]
    match = _BEDROCK_HOST.match(urlsplit(base_url).hostname or "")
    return match.group(1) if match else ""


class SigV4Signer:
    """Signs requests to one provider. `headers_for` returns the Authorization, X-Amz-Date
    and (for temporary credentials) X-Amz-Security-Token headers of one request."""

    def __init__(self, provider: str, region: str, service: str = "bedrock", profile: str = "") -> None:
        self.provider = provider
        self.region = region
        self.service = service
        self.profile = profile
        self._credentials: Credentials | None = None
        self._lock = asyncio.Lock()
        self._missing_logged = False

    @property
    def source(self) -> str:
        """Where the credentials came from (botocore's method name), for messages."""
        method = getattr(self._credentials, "method", "") if self._credentials is not None else ""
        return method or "not found"

    async def headers_for(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        credentials = await self._current()
        # Only what is signed matters to AWS; aiohttp adds its own headers after this.
        request = AWSRequest(method=method, url=url, data=body,
                             headers={"Content-Type": headers.get("Content-Type", "application/json")})
        SigV4Auth(credentials, self.service, self.region).add_auth(request)
        signed = {"Authorization": request.headers["Authorization"], "X-Amz-Date": request.headers["X-Amz-Date"]}
        if "X-Amz-Security-Token" in request.headers:
            signed["X-Amz-Security-Token"] = request.headers["X-Amz-Security-Token"]
        return signed

    def after_failure(self, failure: ProviderError) -> None:
        """AWS refused our signature or token: say where the credentials came from, and
        resolve them afresh next time (a rotated key, a session token botocore did not see
        expire). The failure keeps its class — ENDPOINT — so the route fails over at once
        instead of retrying credentials that will not work."""
        if failure.code in AUTH_ERRORS:
            failure.message = f"{failure.message} (AWS credentials from {self.source})"
            self._credentials = None

    async def _current(self):
        credentials = self._credentials
        if credentials is not None and not _refresh_due(credentials):
            return credentials.get_frozen_credentials()
        async with self._lock:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(self._resolve)
            # botocore refreshes inside get_frozen_credentials when the expiry is near (STS,
            # IMDS: network calls) — in a thread.
            try:
                return await asyncio.to_thread(self._credentials.get_frozen_credentials)
            except BotoCoreError as exc:
                log.warning("provider %s: refreshing AWS credentials (%s) failed: %s", self.provider,
                            self.source, type(exc).__name__)
                raise ProviderError(ErrorClass.ENDPOINT, f"refreshing the AWS credentials of provider "
                                                         f"{self.provider!r} failed") from None

    def _resolve(self) -> Credentials:
        try:
            session = botocore.session.Session(profile=self.profile or None)
            credentials = session.get_credentials()
        except (ProfileNotFound, BotoCoreError) as exc:
            raise self._missing(f"{exc}") from None
        if credentials is None:
            raise self._missing(f"none found in {_SOURCES}")
        log.info("provider %s: AWS credentials from %s", self.provider, credentials.method)
        self._missing_logged = False
        return credentials

    def _missing(self, why: str) -> ProviderError:
        if not self._missing_logged:
            log.warning("provider %s: no usable AWS credentials (%s); its endpoints fail over until there are",
                        self.provider, why)
            self._missing_logged = True
        return ProviderError(ErrorClass.ENDPOINT, f"no AWS credentials on this proxy for provider "
                                                  f"{self.provider!r}: {why}")


# One signer per (provider, region, profile) for the proxy's life: a new routing table (every
# configuration change) must not throw resolved credentials away.
_SIGNERS: dict[tuple[str, str, str], SigV4Signer] = {}


def signer_for(provider: str, region: str, profile: str = "") -> SigV4Signer:
    key = (provider, region, profile)
    signer = _SIGNERS.get(key)
    if signer is None:
        signer = _SIGNERS[key] = SigV4Signer(provider, region, profile=profile)
    return signer


def _refresh_due(credentials: Credentials) -> bool:
    return isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed()
