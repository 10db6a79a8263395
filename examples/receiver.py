#!/usr/bin/env python3
"""A webhook receiver for trying punctual, using only the standard library.

It prints every webhook it gets, and whether its Standard Webhooks signature verifies when
PUNCTUAL_WEBHOOK_SECRET (a whsec_... secret of the server's) is set, then answers 200.

    PUNCTUAL_WEBHOOK_SECRET=whsec_... python3 examples/receiver.py 8080
"""

import base64
import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verified(headers, body, secret):
    """Whether any v1 signature in webhook-signature verifies body under secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split(" "))


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        secret = os.environ.get("PUNCTUAL_WEBHOOK_SECRET")
        signature = "unchecked" if not secret else ("verified" if verified(self.headers, body, secret) else "BAD")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = body.decode(errors="replace")
        print(
            f"received {self.path}: job {self.headers.get('webhook-id')}, attempt {self.headers.get('punctual-attempt')}, "
            f"due {self.headers.get('punctual-scheduled-at')}, signature {signature}, payload {json.dumps(payload)}",
            flush=True,
        )
        self.send_response(200 if signature != "BAD" else 401)
        self.end_headers()

    do_PUT = do_POST
    do_PATCH = do_POST

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
