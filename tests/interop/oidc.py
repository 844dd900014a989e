#!/usr/bin/env python3
"""An off-the-shelf OpenID Connect relying party (Authlib, unmodified) against a real tollgate binary.

The RP discovers the provider from its issuer (OpenID Connect Discovery 1.0, validated by Authlib's
OpenIDProviderMetadata), runs the authorization code flow with PKCE S256 and a nonce, validates the ID
token against the JWKS with Authlib's CodeIDToken claims (signature, iss, aud, exp, iat, nonce, azp,
at_hash) and calls userinfo. Then the refusals an RP relies on: a replayed nonce, an ID token issued to
another client (aud), a tampered signature and a wrong access token for at_hash. Every check exits
non-zero when it fails (no bare assert: python -O would drop it).

usage: oidc.py PATH_TO_TOLLGATE_BINARY
"""

import os
import sys
import urllib.parse

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, JsonWebToken
from authlib.jose import errors as jose_errors
from authlib.oidc.core import CodeIDToken, UserInfo
from authlib.oidc.discovery import OpenIDProviderMetadata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, gateway, hash_secret, sign_in  # noqa: E402

# Authlib 1.6+ raises joserfc's claim errors from its OIDC claim classes, older releases its own.
try:
    from joserfc import errors as joserfc_errors

    CLAIM_ERRORS = (jose_errors.InvalidClaimError, jose_errors.MissingClaimError,
                    joserfc_errors.InvalidClaimError, joserfc_errors.MissingClaimError)
except ImportError:
    CLAIM_ERRORS = (jose_errors.InvalidClaimError, jose_errors.MissingClaimError)
BAD_SIGNATURE = jose_errors.BadSignatureError


class NonceReplayed(Exception):
    """The RP's own refusal: this nonce was accepted before."""


RP_SECRET = "interop-rp-secret-0123"
ALICE_PASSWORD = "interop-alice-password"
# Registered for the clients; the flow stops at the redirect, so nothing listens there.
REDIRECT = "http://127.0.0.1:9877/callback"


def apis(binary):
    return {
        "movies": f"""listen_path: /movies/
upstream:
  mock: {{ status: 200, headers: {{ content-type: application/json }}, body: '{{"movies":[]}}' }}
auth: {{ type: oauth2 }}
oauth:
  openid: true
  grant_types: [authorization_code, refresh_token]
  scopes: [read]
  clients:
    - client_id: rp
      secret_hash: "{hash_secret(binary, RP_SECRET)}"
      redirect_uris: [{REDIRECT}]
      grant_types: [authorization_code, refresh_token]
      scopes: [openid, profile, email, read]
    - client_id: other
      redirect_uris: [{REDIRECT}]
      grant_types: [authorization_code]
      scopes: [openid, profile, email]
"""
    }


def users(binary):
    return (
        f'- username: alice\n  password_hash: "{hash_secret(binary, ALICE_PASSWORD)}"\n'
        "  scopes: [read]\n  claims: { email: alice@example.com, email_verified: true, name: Alice Liddell }\n"
    )


# OpenID Connect Discovery 1.0 §3: RS256 MUST be among the ID-token algorithms.
SIGNING = "{ algorithm: RS256, key_file: keys/signing.pem, generate: true }"


class RelyingParty:
    """What an application does with Authlib: discovery, the code flow, ID-token validation, userinfo.
    It remembers the nonces it has accepted, so a replayed ID token is refused."""

    def __init__(self, issuer, client_id, client_secret):
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        # OpenID Connect Discovery 1.0 §4: issuer + /.well-known/openid-configuration.
        meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5).json()
        metadata = OpenIDProviderMetadata(meta)
        metadata.validate()
        check(metadata["issuer"] == issuer, ("discovered issuer", metadata["issuer"], issuer))
        self.metadata = metadata
        self.jwks = JsonWebKey.import_key_set(requests.get(metadata["jwks_uri"], timeout=5).json())
        self.used_nonces = set()

    def session(self):
        return OAuth2Session(
            self.client_id,
            self.client_secret,
            scope="openid profile email",
            redirect_uri=REDIRECT,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none",
        )

    def sign_in(self, browser):
        """The code flow with PKCE and a nonce; `browser` fills the login form as a user would."""
        session = self.session()
        verifier = os.urandom(32).hex()
        nonce = os.urandom(16).hex()
        url, state = session.create_authorization_url(
            self.metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        location = browser(url)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
        check(query.get("state") == [state], ("state", query))
        check(query.get("iss") == [self.issuer], ("iss in the response (RFC 9207)", query))
        token = session.fetch_token(
            self.metadata["token_endpoint"], authorization_response=location, code_verifier=verifier
        )
        check("id_token" in token, ("no id_token in the token response", token))
        return session, token, nonce

    def validate(self, id_token, nonce, access_token):
        """Authlib's CodeIDToken rules, then the RP's own: a nonce is accepted once."""
        claims = JsonWebToken(self.metadata["id_token_signing_alg_values_supported"]).decode(
            id_token,
            self.jwks,
            claims_cls=CodeIDToken,
            claims_options={
                "iss": {"essential": True, "values": [self.issuer]},
                "aud": {"essential": True, "values": [self.client_id]},
                "nonce": {"essential": True},
            },
            claims_params={"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
        )
        claims.validate(leeway=5)
        if claims["nonce"] in self.used_nonces:
            raise NonceReplayed(claims["nonce"])
        self.used_nonces.add(claims["nonce"])
        return claims

    def userinfo(self, session):
        response = session.get(self.metadata["userinfo_endpoint"], timeout=5)
        check(response.status_code == 200, ("userinfo", response.status_code, response.text))
        return UserInfo(response.json())


def browser_for(password):
    """A user at a browser who signs in with `password` (see harness.sign_in)."""
    return lambda url: sign_in(url, password)


def refused(call, error, what):
    """`call` must raise `error` (the RP refusing); anything else fails the run."""
    try:
        call()
    except error:
        return
    except Exception as other:  # noqa: BLE001 - any other outcome is a failure, reported as such
        raise SystemExit(f"interop check failed: {what}: expected {error}, got {other!r}")
    raise SystemExit(f"interop check failed: {what}: accepted")


def main():
    binary = sys.argv[1]
    with gateway(binary, users(binary), apis(binary), signing=SIGNING) as base:
        issuer = f"{base}/movies"
        rp = RelyingParty(issuer, "rp", RP_SECRET)
        check(rp.metadata["userinfo_endpoint"] == f"{issuer}/oauth/userinfo", rp.metadata)
        check("S256" in rp.metadata["code_challenge_methods_supported"], rp.metadata)
        # The RFC 8414 document at the well-known path under /.well-known agrees.
        rfc8414 = requests.get(f"{base}/.well-known/oauth-authorization-server/movies", timeout=5).json()
        check(rfc8414["issuer"] == issuer and rfc8414["token_endpoint"] == rp.metadata["token_endpoint"], rfc8414)
        print("ok  discovery from the issuer (Authlib OpenIDProviderMetadata.validate)")

        session, token, nonce = rp.sign_in(browser_for(ALICE_PASSWORD))
        claims = rp.validate(token["id_token"], nonce, token["access_token"])
        check(claims["sub"] == "alice", claims)
        check(claims["email"] == "alice@example.com" and claims["email_verified"] is True, claims)
        check(claims["name"] == "Alice Liddell", claims)
        check("auth_time" in claims and "at_hash" in claims, claims)
        print("ok  code flow + PKCE + nonce; ID token valid per CodeIDToken (signature, iss, aud, nonce, at_hash)")

        info = rp.userinfo(session)
        check(info["sub"] == claims["sub"], (info, claims))
        check(info["email"] == "alice@example.com", info)
        print("ok  userinfo (sub matches the ID token)")

        # Refusals the RP must make.
        refused(lambda: rp.validate(token["id_token"], nonce, token["access_token"]),
                NonceReplayed, "a replayed nonce")
        refused(lambda: rp.validate(token["id_token"], "another-nonce", token["access_token"]),
                CLAIM_ERRORS, "an ID token with another nonce")
        refused(lambda: rp.validate(token["id_token"], nonce, token["access_token"] + "x"),
                CLAIM_ERRORS, "at_hash of another access token")
        head, payload, signature = token["id_token"].split(".")
        tampered = ".".join([head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
        refused(lambda: rp.validate(tampered, nonce, token["access_token"]), BAD_SIGNATURE,
                "a tampered signature")
        # An ID token issued to another client (aud = other), presented to this RP.
        other = RelyingParty(issuer, "other", None)
        _, other_token, other_nonce = other.sign_in(browser_for(ALICE_PASSWORD))
        other.validate(other_token["id_token"], other_nonce, other_token["access_token"])
        refused(lambda: rp.validate(other_token["id_token"], other_nonce, other_token["access_token"]),
                CLAIM_ERRORS, "an ID token whose aud is another client")
        print("ok  refused by the RP: replayed nonce, other nonce, wrong at_hash, tampered signature, other aud")

        # A refresh gives a new ID token for the same sign-in (same auth_time and nonce).
        refreshed = session.refresh_token(rp.metadata["token_endpoint"], refresh_token=token["refresh_token"])
        again = JsonWebToken(["RS256"]).decode(
            refreshed["id_token"], rp.jwks, claims_cls=CodeIDToken,
            claims_options={"iss": {"values": [issuer]}, "aud": {"values": ["rp"]}},
            claims_params={"nonce": nonce, "client_id": "rp", "access_token": refreshed["access_token"]},
        )
        again.validate(leeway=5)
        check(again["auth_time"] == claims["auth_time"], (again, claims))
        print("ok  refresh: a new ID token, same auth_time and nonce")

        # userinfo without a token, with a bad one: RFC 6750 challenges.
        bare = requests.get(rp.metadata["userinfo_endpoint"], timeout=5)
        check(bare.status_code == 401 and bare.headers.get("WWW-Authenticate", "").startswith("Bearer"), bare.headers)
        bad = requests.get(rp.metadata["userinfo_endpoint"], headers={"Authorization": "Bearer nope"}, timeout=5)
        check(bad.status_code == 401 and 'error="invalid_token"' in bad.headers.get("WWW-Authenticate", ""), bad.headers)
        print("ok  userinfo refuses a missing or bad token")
    print("oidc interop: all checks passed")


if __name__ == "__main__":
    main()
