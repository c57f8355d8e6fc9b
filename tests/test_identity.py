"""The control plane's ID-token checks, against an issuer served in-process (its discovery
document and JWKS through httpx's MockTransport), with tokens this test signs itself — the
cases a real issuer rarely produces: several keys and no kid, key rotation, azp, HS256 and
`none`, and the sign-in rules around verified claims."""

from __future__ import annotations

import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from controlplane import identity, rbac
from controlplane.store import open_store

ISSUER = "https://idp.example.test"
CLIENT = "megarouter-console"


def _settings(**extra) -> identity.SsoSettings:
    return identity.SsoSettings(issuer=ISSUER, client_id=CLIENT, allowed_domains=["example.com"], **extra)


class FakeIssuer:
    def __init__(self, *keys: RSAKey) -> None:
        self.keys = list(keys)
        self.jwks_fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks",
                                             "id_token_signing_alg_values_supported": ["RS256"]})
        self.jwks_fetches += 1
        return httpx.Response(200, json=KeySet(self.keys).as_dict(private=False))

    def verifier(self, **settings) -> identity.IdTokenVerifier:
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return identity.IdTokenVerifier(_settings(**settings), client=client)


def _token(key, *, kid: bool = True, alg: str = "RS256", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": CLIENT, "sub": "u1", "iat": now, "exp": now + 300, "nonce": "n",
            "email": "ann@example.com", "email_verified": True, **claims}
    header = {"alg": alg, **({"kid": key.kid} if kid and getattr(key, "kid", None) else {})}
    return jwt.encode(header, body, key)


def _rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


async def test_a_token_without_kid_is_checked_against_every_key() -> None:
    first, second = _rsa("k1"), _rsa("k2")
    issuer = FakeIssuer(first, second)
    claims = await issuer.verifier().verify(_token(second, kid=False), "n")
    assert claims["email"] == "ann@example.com"


async def test_a_rotated_key_is_fetched_once_and_forged_ones_are_refused() -> None:
    old, new = _rsa("old"), _rsa("new")
    issuer = FakeIssuer(old)
    verifier = issuer.verifier()
    await verifier.verify(_token(old), "n")
    issuer.keys = [new]
    verifier.REFRESH_MIN_INTERVAL_S = 0  # the once-a-minute limit is the subject of the next check
    assert (await verifier.verify(_token(new), "n"))["sub"] == "u1"
    stranger = _rsa("new")  # same kid, another key: a forgery
    verifier.REFRESH_MIN_INTERVAL_S = 60
    fetches = issuer.jwks_fetches
    for _ in range(5):
        with pytest.raises(identity.SignInRefused):
            await verifier.verify(_token(stranger), "n")
    assert issuer.jwks_fetches - fetches <= 1  # refetches are rate limited


@pytest.mark.parametrize(("change", "why"), [
    ({"aud": "someone-else"}, "aud"), ({"iss": "https://evil.example"}, "iss"),
    ({"exp": int(time.time()) - 3600}, "exp"), ({"azp": "someone-else"}, "azp"),
    ({"aud": [CLIENT, "other"]}, "azp"),
])
async def test_claims_that_do_not_name_this_client_and_issuer_now_are_refused(change, why) -> None:
    key = _rsa("k")
    with pytest.raises(identity.SignInRefused) as refused:
        await FakeIssuer(key).verifier().verify(_token(key, **change), "n")
    assert why in str(refused.value)


async def test_symmetric_and_unsigned_tokens_are_refused() -> None:
    key = _rsa("k")
    secret = OctKey.import_key(b"0123456789abcdef0123456789abcdef")
    with pytest.raises(identity.SignInRefused):
        await FakeIssuer(key).verifier().verify(_token(secret, alg="HS256"), "n")
    unsigned = _token(key).rsplit(".", 1)[0].split(".")[1]
    header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    with pytest.raises(identity.SignInRefused):
        await FakeIssuer(key).verifier().verify(f"{header}.{unsigned}.", "n")


def test_sign_in_email_rules() -> None:
    settings = _settings()
    assert identity.sign_in_email(settings, {"email": "Ann@Example.COM", "email_verified": True}) == "ann@example.com"
    for claims in ({"email": "ann@example.com"}, {"email": "ann@example.com", "email_verified": "true"},
                   {"email": "ann@sub.example.com", "email_verified": True},
                   {"email": "a@evil.com@example.com", "email_verified": True},
                   {"email": "ann@example.com.", "email_verified": True}, {"email_verified": True}):
        with pytest.raises(identity.SignInRefused):
            identity.sign_in_email(settings, claims)


def test_sso_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="signup.domains"):
        _settings(signup={"domains": ["other.example"], "parent": "sandbox"})
    with pytest.raises(ValueError, match="finite"):
        _settings(signup={"domains": ["example.com"], "parent": "sandbox", "budget": {"limit_usd": float("inf")}})
    with pytest.raises(ValueError, match="role"):
        _settings(group_bindings=[{"group": "g", "role": "console"}])


def test_sign_up_names_cannot_be_squatted() -> None:
    first = identity.signup_node_name("alice@example.com", "sandbox", set())
    fallback = identity.signup_node_name("alice@example.com", "sandbox", {first})
    random_one = identity.signup_node_name("alice@example.com", "sandbox", {first, fallback})
    assert first == "sandbox-alice" and fallback.startswith("sandbox-alice-") and random_one not in {first, fallback}


async def test_a_session_does_not_survive_its_token_being_replaced(tmp_path) -> None:
    store = await open_store(str(tmp_path / "store"))
    try:
        await rbac.bootstrap(store, "mr-admin-test-replaced-0000000000000")
        token = rbac.TOKENS.decode(await store.get(rbac.TOKENS.key("bootstrap")))
        secret, _ = await rbac.start_session(store, token="bootstrap", ttl_s=600, idle_timeout_s=300,
                                             subject_check=token.token_hash)
        directory = rbac.AccessDirectory(store)
        assert await directory.authenticate(f"Bearer {secret}") is not None
        # The token is re-created with another secret, and its sessions were not ended.
        replaced = token.model_copy(update={"token_hash": rbac.hash_token("mr-admin-another-secret-000000000")})
        await store.commit([], [(rbac.TOKENS.key("bootstrap"), rbac.TOKENS.encode(replaced)),
                                ("/megarouter/v1/settings/guard", b"test")])
        assert await directory.authenticate(f"Bearer {secret}") is None
    finally:
        await store.close()


async def test_a_store_whose_admins_are_people_needs_no_bootstrap_token(tmp_path) -> None:
    store = await open_store(str(tmp_path / "store"))
    try:
        await rbac.bootstrap_service_token(store, "console", "mr-console-test-0000000000000000000", "console")
        directory = rbac.AccessDirectory(store)
        assert not await directory.has_operator_tokens()  # only a service credential
        user = identity.UserRecord(email="root@example.com", created_at_unix_ms=1)
        binding = rbac.RoleBindingRecord(name="root-admin", user=user.email, role="admin")
        await store.commit([], [(identity.USERS.key(user.email), identity.USERS.encode(user)),
                                (rbac.BINDINGS.key(binding.name), rbac.BINDINGS.encode(binding)),
                                ("/megarouter/v1/settings/guard", b"test")])
        assert await directory.has_operator_tokens()
    finally:
        await store.close()
