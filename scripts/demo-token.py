#!/usr/bin/env python3
"""Prints an HS256 JWT signed with the DEMO key in envoy/envoy.yaml.

Usage: scripts/demo-token.py SUBJECT [GROUP ...] [--claim NAME=VALUE ...]
Example: curl -H "authorization: Bearer $(scripts/demo-token.py alice analysts)" ...
         scripts/demo-token.py agent-7 agents --claim on_behalf_of=alice
Valid for one hour. Demo only: the key is public.
"""
import base64, hashlib, hmac, json, sys, time

KEY = b"countersign-demo-key-not-for-production-use-0001"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    args, extra = sys.argv[1:], {}
    while "--claim" in args:
        i = args.index("--claim")
        if i + 1 >= len(args) or "=" not in args[i + 1]:
            sys.exit("--claim needs NAME=VALUE")
        name, value = args[i + 1].split("=", 1)
        extra[name] = value
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    claims = {"iss": "countersign-demo", "sub": args[0], "groups": args[1:],
              "exp": int(time.time()) + 3600, **extra}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(KEY, f"{head}.{body}".encode(), hashlib.sha256).digest())
    print(f"{head}.{body}.{sig}")


if __name__ == "__main__":
    main()
