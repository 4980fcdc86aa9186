#!/usr/bin/env python3
"""Interop check: an independent JWT implementation (PyJWT with `cryptography`) validates
kms access tokens using nothing but the server's /.well-known/jwks.json.

Usage: python3 jwks_interop.py BASE_URL ACCESS_TOKEN ISSUER AUDIENCE

Exits 0 when every check passes, 1 on the first failure, and 3 (printing SKIP) when PyJWT
or cryptography is not installed (`pip install pyjwt cryptography`).
"""

import base64
import json
import sys

try:
    import jwt
    from jwt import PyJWKClient
    import cryptography  # noqa: F401  (PyJWT needs it for EdDSA)
except ImportError as err:
    print(f"SKIP: PyJWT with cryptography is not installed ({err})")
    sys.exit(3)


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rejected(token, key, **kwargs):
    try:
        jwt.decode(token, key, algorithms=["EdDSA"], **kwargs)
    except jwt.PyJWTError as err:
        return type(err).__name__
    return None


def main():
    base, token, issuer, audience = sys.argv[1:5]
    jwks_url = base.rstrip("/") + "/.well-known/jwks.json"

    header = jwt.get_unverified_header(token)
    check(header.get("alg") == "EdDSA", f"alg is EdDSA ({header})")
    check(header.get("typ") == "at+jwt", f"typ is at+jwt ({header})")
    check(bool(header.get("kid")), "the header names a kid")

    # The key comes from the JWKS alone, chosen by the token's kid.
    client = PyJWKClient(jwks_url, cache_keys=False)
    signing_key = client.get_signing_key_from_jwt(token)
    check(signing_key.key_id == header["kid"], "the JWKS holds the token's kid")

    required = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"]
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=issuer,
        options={"require": required},
    )
    check(claims["iss"] == issuer, "iss matches")
    check(claims["aud"] == audience, "aud matches")
    check(claims["sub"].startswith("tok_"), "sub is the API key's id")
    check("scope" in claims and "app_id" in claims, "scope and app_id are present")
    check(claims["exp"] > claims["iat"] >= claims["nbf"] - 1, "exp > iat, nbf near iat")

    # What an independent validator must refuse.
    h, p, s = token.split(".")
    payload = json.loads(unb64url(p))
    payload["scope"] = "admin"
    tampered = ".".join([h, b64url(json.dumps(payload).encode()), s])
    check(rejected(tampered, signing_key.key, audience=audience) == "InvalidSignatureError",
          "a tampered payload fails the signature")
    check(rejected(token, signing_key.key, audience="someone-else") == "InvalidAudienceError",
          "a wrong audience is refused")
    check(rejected(token, signing_key.key, audience=audience, issuer="https://evil.example")
          == "InvalidIssuerError", "a wrong issuer is refused")
    none_header = b64url(json.dumps({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}).encode())
    check(rejected(f"{none_header}.{p}.", signing_key.key, audience=audience) is not None,
          "alg none is refused")

    print("interop ok")


if __name__ == "__main__":
    main()
