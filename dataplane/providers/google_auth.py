"""OAuth 2 access tokens for Vertex AI, by google-auth.

A provider's credential (a reference, as everywhere) names a service-account key file; without
one, google-auth's Application Default Credentials apply — GOOGLE_APPLICATION_CREDENTIALS,
workload identity on GKE, or the metadata server of the VM or Cloud Run service. google-auth
signs the JWT assertion and exchanges it for an access token; this module only caches the
token and refreshes it before it expires — in a thread, since google-auth's transport is
blocking — so requests never wait on a refresh they could avoid, and never on the event loop.

No credentials to be found is not a crash: each attempt fails with ErrorClass.ENDPOINT (the
route falls back) and the reason is logged once. Tokens and keys are never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Mapping

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import service_account

from dataplane.providers.base import ErrorClass, ProviderError

log = logging.getLogger("megarouter.proxy.google")

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# Refresh a token this long before it expires (a request in flight must not carry a token that
# lapses on the way).
REFRESH_BEFORE_S = 300
_REFUSED = {"UNAUTHENTICATED"}


class GoogleTokenSigner:
    """Adds `Authorization: Bearer <access token>` to each request to one provider."""

    def __init__(self, provider: str, service_account_json: str | None) -> None:
        self.provider = provider
        self._service_account_json = service_account_json
        self._credentials = None
        self._lock = asyncio.Lock()
        self._missing_logged = False

    @property
    def source(self) -> str:
        if self._service_account_json:
            return "the provider's service-account key"
        return "application default credentials"

    async def headers_for(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        credentials = self._credentials
        if credentials is None or _refresh_due(credentials):
            async with self._lock:
                if self._credentials is None:
                    self._credentials = await asyncio.to_thread(self._resolve)
                if _refresh_due(self._credentials):
                    await asyncio.to_thread(self._refresh, self._credentials)
                credentials = self._credentials
        return {"Authorization": f"Bearer {credentials.token}"}

    def after_failure(self, failure: ProviderError) -> None:
        """Vertex refused the token (revoked, or the key was rotated): get a new one for the
        next request; the failure keeps its class (ENDPOINT), so this one fails over."""
        if failure.status == 401 or failure.code in _REFUSED:
            failure.message = f"{failure.message} (credentials: {self.source})"
            if self._credentials is not None:
                self._credentials.token = None
                self._credentials.expiry = None

    def _resolve(self):
        try:
            if self._service_account_json:
                info = json.loads(self._service_account_json)
                return service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
            credentials, _project = google.auth.default(scopes=list(SCOPES))
            return credentials
        except (ValueError, KeyError, google.auth.exceptions.GoogleAuthError) as exc:
            raise self._missing(f"{type(exc).__name__}: {str(exc)[:200]}") from None

    def _refresh(self, credentials) -> None:
        try:
            credentials.refresh(google.auth.transport.requests.Request())
        except google.auth.exceptions.GoogleAuthError as exc:
            log.warning("provider %s: getting a Google access token (%s) failed: %s", self.provider, self.source,
                        type(exc).__name__)
            raise ProviderError(ErrorClass.ENDPOINT, f"getting a Google access token for provider "
                                                     f"{self.provider!r} failed ({type(exc).__name__})") from None
        self._missing_logged = False

    def _missing(self, why: str) -> ProviderError:
        if not self._missing_logged:
            log.warning("provider %s: no usable Google credentials (%s); its endpoints fail over until there are",
                        self.provider, why)
            self._missing_logged = True
        return ProviderError(ErrorClass.ENDPOINT, f"no Google credentials on this proxy for provider "
                                                  f"{self.provider!r}")


def _refresh_due(credentials) -> bool:
    if not credentials.token or credentials.expiry is None:
        return True
    expiry = credentials.expiry  # naive UTC, as google-auth keeps it
    return expiry - dt.timedelta(seconds=REFRESH_BEFORE_S) <= dt.datetime.now(dt.UTC).replace(tzinfo=None)


# One signer per (provider, key) for the proxy's life: a new routing table must not drop a
# cached token.
_SIGNERS: dict[tuple[str, str], GoogleTokenSigner] = {}


def signer_for(provider: str, service_account_json: str | None) -> GoogleTokenSigner:
    key = (provider, service_account_json or "")
    signer = _SIGNERS.get(key)
    if signer is None:
        signer = _SIGNERS[key] = GoogleTokenSigner(provider, service_account_json)
    return signer
