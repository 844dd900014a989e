#!/usr/bin/env python3
"""Off-the-shelf OAuth clients against a real tollgate binary.

Runs authorization code + PKCE, client credentials, password and refresh with Authlib and
requests-oauthlib, unmodified, and verifies every access token with PyJWT's JWKS client.

usage: clients.py PATH_TO_TOLLGATE_BINARY
"""

import os
import ssl
import sys
import urllib.parse

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from oauthlib.oauth2 import BackendApplicationClient, LegacyApplicationClient
from requests_oauthlib import OAuth2Session as RequestsOAuth2Session

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CA, check, gateway, hash_secret, sign_in  # noqa: E402

SERVICE_SECRET = "interop-service-secret"
APP_SECRET = "interop-app-secret"
ALICE_PASSWORD = "interop-alice-password"
# Registered for the clients; the flow stops at the redirect, so nothing listens there.
REDIRECT = "http://127.0.0.1:9876/callback"


def apis(binary):
    return {
        "movies": f"""listen_path: /movies/
upstream:
  mock: {{ status: 200, headers: {{ content-type: application/json }}, body: '{{"movies":[]}}' }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [authorization_code, client_credentials, password, refresh_token]
  scopes: [read, write]
  clients:
    - client_id: service
      secret_hash: "{hash_secret(binary, SERVICE_SECRET)}"
      grant_types: [client_credentials]
      scopes: [read, write]
    - client_id: app
      secret_hash: "{hash_secret(binary, APP_SECRET)}"
      redirect_uris: [{REDIRECT}]
      grant_types: [authorization_code, password, refresh_token]
      scopes: [read, write]
    - client_id: spa
      redirect_uris: [{REDIRECT}]
      grant_types: [authorization_code, refresh_token]
      scopes: [read]
"""
    }


def users(binary):
    return (
        f'- username: alice\n  password_hash: "{hash_secret(binary, ALICE_PASSWORD)}"\n'
        "  scopes: [read, write]\n  claims: { email: alice@example.com }\n"
    )


def verify(base, token, expected_sub):
    """PyJWT with its JWKS client, as a resource server would."""
    jwks = jwt.PyJWKClient(f"{base}/.well-known/jwks.json", ssl_context=ssl.create_default_context(cafile=CA))
    key = jwks.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    check(header["typ"] == "at+jwt", header)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience="movies",
        issuer=f"{base}/movies",
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    check(claims["sub"] == expected_sub, claims)
    api = requests.get(f"{base}/movies/list", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    check(api.status_code == 200, (api.status_code, api.text))
    return claims


def authorization_code_pkce(base, client_id, client_secret):
    """Authlib's OAuth2Session with PKCE S256; the login form is filled like a browser would."""
    session = OAuth2Session(
        client_id,
        client_secret,
        scope="read",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if client_secret else "none",
    )
    verifier = "v" * 20 + os.urandom(24).hex()
    url, state = session.create_authorization_url(f"{base}/movies/oauth/authorize", code_verifier=verifier)
    location = sign_in(url, ALICE_PASSWORD)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    check(query["state"] == [state], query)
    check(query["iss"] == [f"{base}/movies"], query)
    token = session.fetch_token(
        f"{base}/movies/oauth/token", authorization_response=location, code_verifier=verifier
    )
    verify(base, token["access_token"], "alice")
    return session, token


def main():
    binary = sys.argv[1]
    with gateway(binary, users(binary), apis(binary)) as base:
        token_url = f"{base}/movies/oauth/token"
        meta = requests.get(f"{base}/.well-known/oauth-authorization-server/movies", timeout=5).json()
        check(meta["token_endpoint"] == token_url, meta)

        # Authlib: client credentials (HTTP Basic).
        cc = OAuth2Session("service", SERVICE_SECRET, scope="read")
        token = cc.fetch_token(token_url, grant_type="client_credentials")
        verify(base, token["access_token"], "service")
        print("ok  authlib client_credentials")

        # requests-oauthlib: client credentials (BackendApplicationClient).
        backend = RequestsOAuth2Session(client=BackendApplicationClient(client_id="service"))
        token = backend.fetch_token(token_url, client_id="service", client_secret=SERVICE_SECRET)
        verify(base, token["access_token"], "service")
        print("ok  requests-oauthlib client_credentials")

        # Authlib: password, then refresh (rotation: the old refresh token stops working).
        pw = OAuth2Session("app", APP_SECRET, scope="read write")
        token = pw.fetch_token(token_url, username="alice", password=ALICE_PASSWORD)
        verify(base, token["access_token"], "alice")
        old_refresh = token["refresh_token"]
        refreshed = pw.refresh_token(token_url, refresh_token=old_refresh)
        check(refreshed["refresh_token"] != old_refresh, 'refreshed["refresh_token"] != old_refresh')
        verify(base, refreshed["access_token"], "alice")
        reuse = requests.post(
            token_url,
            data={"grant_type": "refresh_token", "refresh_token": old_refresh},
            auth=("app", APP_SECRET),
            timeout=5,
        )
        check(reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", reuse.text)
        print("ok  authlib password + refresh (+ reuse refused)")

        # requests-oauthlib: password (LegacyApplicationClient).
        legacy = RequestsOAuth2Session(client=LegacyApplicationClient(client_id="app"))
        token = legacy.fetch_token(
            token_url, username="alice", password=ALICE_PASSWORD, client_id="app", client_secret=APP_SECRET
        )
        verify(base, token["access_token"], "alice")
        print("ok  requests-oauthlib password")

        # Authlib: authorization code + PKCE, confidential and public clients, then refresh.
        session, token = authorization_code_pkce(base, "app", APP_SECRET)
        refreshed = session.refresh_token(token_url, refresh_token=token["refresh_token"])
        verify(base, refreshed["access_token"], "alice")
        authorization_code_pkce(base, "spa", None)
        print("ok  authlib authorization_code + PKCE (confidential and public) + refresh")

        # Revocation and introspection (RFC 7009 / 7662) with Authlib's helpers.
        revoked = session.revoke_token(f"{base}/movies/oauth/revoke", token=refreshed["refresh_token"])
        check(revoked.status_code == 200, (revoked.status_code, revoked.text))
        intro = requests.post(
            f"{base}/movies/oauth/introspect",
            data={"token": refreshed["access_token"]},
            auth=("service", SERVICE_SECRET),
            timeout=5,
        ).json()
        check(intro == {"active": False}, intro)
        print("ok  authlib revoke → introspect inactive")
    print("interop: all flows passed")


if __name__ == "__main__":
    main()
