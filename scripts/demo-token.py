#!/usr/bin/env python3
"""Prints an HS256 JWT signed with the DEMO key in envoy/envoy.yaml.

Usage: scripts/demo-token.py SUBJECT [GROUP ...]
Example: curl -H "authorization: Bearer $(scripts/demo-token.py alice analysts)" ...
Valid for one hour. Demo only: the key is public.
"""
import base64, hashlib, hmac, json, sys, time

KEY = b"countersign-demo-key-not-for-production-use-0001"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    claims = {"iss": "countersign-demo", "sub": sys.argv[1], "groups": sys.argv[2:],
              "exp": int(time.time()) + 3600}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(KEY, f"{head}.{body}".encode(), hashlib.sha256).digest())
    print(f"{head}.{body}.{sig}")


if __name__ == "__main__":
    main()
