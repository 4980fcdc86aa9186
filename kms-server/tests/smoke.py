#!/usr/bin/env python3
"""Smoke test of the kms HTTP API from another language, with the standard library only.

Usage: python3 kms-server/tests/smoke.py --kms target/debug/kms

Initialises a fresh database, starts `kms serve` on an ephemeral port, drives the main
endpoints with urllib the way a curl user would, checks the error shape, and stops the
server with SIGTERM (it must exit 0). Exits non-zero on the first failed check.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request


def call(base, method, path, token=None, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None and content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), (json.loads(raw) if raw.strip().startswith(b"{") else raw)
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, dict(err.headers), json.loads(raw) if raw else None


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


def check_error(result, status, code):
    got_status, headers, body = result
    check(got_status == status, f"status {status} (got {got_status}: {body})")
    err = body["error"]
    check(err["code"] == code, f"code {code}")
    rid = {k.lower(): v for k, v in headers.items()}.get("x-request-id")
    check(err["request_id"] == rid, "error.request_id equals x-request-id")
    check(isinstance(err["retryable"], bool) and isinstance(err["details"], dict), "error shape")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kms", required=True, help="path to the kms binary")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
    env["KMS_INSECURE_FAST_HASH"] = "1"  # test-only: cheap argon2id

    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "kms.db")
        out = subprocess.run([args.kms, "init", "--db", db], env=env, capture_output=True, check=True)
        root = json.loads(out.stdout)["root_token"]

        server = subprocess.Popen(
            [args.kms, "serve", "--db", db, "--listen", "127.0.0.1:0"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        base = None
        for line in server.stderr:
            m = re.match(r"listening on (\S+)", line)
            if m:
                base = "http://" + m.group(1)
                break
        check(base is not None, "server announced its address")
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()

        try:
            status, _, body = call(base, "GET", "/healthz")
            check(status == 200 and body == {"status": "ok"}, "healthz")
            status, _, body = call(base, "GET", "/readyz")
            check(status == 200 and body == {"status": "ready"}, "readyz")

            status, _, app = call(base, "POST", "/v1/apps", root, {"name": "billing", "token_prefix": "bill"})
            check(status == 201 and app["status"] == "active", "create app")
            status, headers, tok = call(base, "POST", f"/v1/apps/{app['id']}/tokens", root,
                                        {"name": "ci", "scopes": ["app.read"], "expires_in": 3600})
            check(status == 201 and tok["token"].startswith("bill_"), "create token")
            check({k.lower(): v for k, v in headers.items()}.get("cache-control") == "no-store", "no-store")

            status, _, v = call(base, "POST", "/v1/verify", root, {"token": tok["token"], "permissions": "app.read"})
            check(status == 200 and v["valid"] is True and v["code"] == "VALID", "verify VALID")
            status, _, v = call(base, "POST", "/v1/verify", root, {"token": "bill_nope"})
            check(status == 200 and v == {"valid": False, "code": "MALFORMED"}, "verify MALFORMED")

            check_error(call(base, "GET", "/v1/apps"), 401, "unauthenticated")
            check_error(call(base, "POST", "/v1/apps", tok["token"], {"name": "x"}), 403, "forbidden")
            check_error(call(base, "GET", "/v1/apps/app_missing", root), 404, "not_found")
            check_error(call(base, "POST", "/v1/apps", root, b"{oops"), 400, "invalid_request")
            check_error(call(base, "POST", "/v1/apps", root, b"name=x", "text/plain"), 415, "unsupported_media_type")

            status, _, page = call(base, "GET", f"/v1/apps/{app['id']}/tokens?limit=10", root)
            check(status == 200 and len(page["items"]) == 1 and "token" not in page["items"][0], "list tokens")
            status, _, revoked = call(base, "POST", f"/v1/tokens/{tok['id']}/revoke", root)
            check(status == 200 and revoked["status"] == "revoked", "revoke")
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
        check(code == 0, "graceful shutdown exits 0")
    print("smoke test passed")


if __name__ == "__main__":
    main()
