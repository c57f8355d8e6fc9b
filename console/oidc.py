"""The console's half of OIDC single sign-on: the authorization-code flow with PKCE.

authlib's asyncio OAuth 2 client builds the authorization URL (state, nonce, S256 code
challenge) and redeems the code at the token endpoint with the client secret. The ID token
it returns is not trusted here: the control plane verifies it (signature, issuer,
audience, expiry, nonce) when the console trades it for a session, so the console cannot
sign anyone in on its own say-so.

The issuer and client id come from the control plane (`GetSignInOptions`), so the two can
never disagree; the client secret is the console's own, given by reference (an environment
variable or a file), never stored in the control plane.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError


class SsoError(Exception):
    """The identity provider or the redirect back from it failed."""


@dataclass(frozen=True)
class SsoClient:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: tuple[str, ...]

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(client_id=self.client_id, client_secret=self.client_secret,
                                 scope=" ".join(self.scopes), redirect_uri=self.redirect_uri,
                                 code_challenge_method="S256", timeout=10.0)

    async def _endpoints(self) -> dict:
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await http.get(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
                response.raise_for_status()
                discovery = response.json()
            return {"authorize": discovery["authorization_endpoint"], "token": discovery["token_endpoint"]}
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise SsoError(f"cannot read the issuer's discovery document: {exc}") from None

    async def start(self) -> tuple[str, dict]:
        """The URL to send the browser to, and the state to keep until it comes back."""
        endpoints = await self._endpoints()
        verifier = generate_token(64)
        nonce = secrets.token_urlsafe(24)
        async with self._client() as client:
            url, state = client.create_authorization_url(endpoints["authorize"], code_verifier=verifier, nonce=nonce)
        return url, {"state": state, "nonce": nonce, "verifier": verifier}

    async def finish(self, callback_url: str, pending: dict) -> tuple[str, str]:
        """(ID token, nonce) for the authorization response `callback_url`, or SsoError."""
        endpoints = await self._endpoints()
        async with self._client() as client:
            client.state = pending["state"]
            try:
                token = await client.fetch_token(endpoints["token"], authorization_response=callback_url,
                                                 code_verifier=pending["verifier"], state=pending["state"])
            except (OAuthError, httpx.HTTPError, ValueError) as exc:
                raise SsoError(f"the token endpoint refused the code: {exc}") from None
        id_token = token.get("id_token")
        if not id_token:
            raise SsoError("the token response has no id_token (is the 'openid' scope granted?)")
        return id_token, pending["nonce"]
