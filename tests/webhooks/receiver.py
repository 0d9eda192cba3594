"""A webhook receiver that verifies with the Standard Webhooks library.

Usage: receiver.py, with WEBHOOK_SECRETS a JSON object of name -> secret
(`whsec_...`) and WEBHOOK_ACCEPT the name of the secret this receiver
trusts. It listens on 127.0.0.1 (a free port), prints {"port": N}, then one
JSON line per POST: the path, the Standard Webhooks headers, the body as
received, whether it verified with each secret, and whether a copy with
one byte more (a space before the last) verified with any. It answers 204
when the trusted secret verified, else 401.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRETS = {name: Webhook(s) for name, s in json.loads(os.environ["WEBHOOK_SECRETS"]).items()}
ACCEPT = os.environ["WEBHOOK_ACCEPT"]
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verified(hook, body, headers):
    try:
        hook.verify(body, headers)
        return True
    except WebhookVerificationError:
        return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        tampered = body[:-1] + b" " + body[-1:]
        results = {name: verified(h, body, headers) for name, h in SECRETS.items()}
        report = {
            "path": self.path,
            "headers": {k: headers.get(k) for k in HEADERS},
            "body": body.decode(),
            "verified": results,
            "tampered_verified": any(verified(h, tampered, headers) for h in SECRETS.values()),
        }
        print(json.dumps(report), flush=True)
        self.send_response(204 if results[ACCEPT] else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
