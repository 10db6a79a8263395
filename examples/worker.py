#!/usr/bin/env python3
"""A punctual remote worker in Python, using only the standard library.

It claims due jobs of the kinds it runs (waiting up to 20 s for one to fall due), keeps each
job's lease alive while it works, and reports the outcome, fenced on the lease token: if the
lease was lost meanwhile (the worker stalled past it and the job went to another worker, or
someone cancelled it), the server answers 409 `lease_lost` and the result is dropped.

    PUNCTUAL_URL=http://127.0.0.1:7272 PUNCTUAL_TOKEN=pct_... \
        python3 examples/worker.py --kind send_reminder

The token needs the `worker` scope: `punctual tokens create --label worker --scope worker`.
Replace `handle` with your own work; raise `Retry` or `Permanent` to steer a failure.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request


class Retry(Exception):
    """Retry no sooner than `after_s` seconds (instead of the job's backoff)."""

    def __init__(self, message, after_s):
        super().__init__(message)
        self.after_s = after_s


class Permanent(Exception):
    """Do not retry: the job is dead at once."""


class LeaseLost(Exception):
    """The server refused a call because this worker no longer holds the job."""


class Punctual:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            problem = json.loads(error.read() or b"{}")
            if error.code == 409 and problem.get("code") == "lease_lost":
                raise LeaseLost(problem.get("detail", "lease lost")) from None
            raise RuntimeError(f"{method} {path}: {error.code} {problem.get('code')}: {problem.get('detail')}") from None

    def claim(self, worker, kinds, limit, lease_ms, wait_ms):
        body = {"worker": worker, "kinds": kinds, "limit": limit, "lease_ms": lease_ms, "wait_ms": wait_ms}
        return self.call("POST", "/v1/workers/claim", body)["jobs"]

    def extend(self, job, lease_ms):
        self.call("POST", f"/v1/jobs/{job['id']}/lease", {"lease_token": job["lease_token"], "lease_ms": lease_ms})

    def complete(self, job):
        self.call("POST", f"/v1/jobs/{job['id']}/complete", {"lease_token": job["lease_token"]})

    def fail(self, job, error, retry_after_ms=None, permanent=False):
        body = {"lease_token": job["lease_token"], "error": str(error)[:4000]}
        if retry_after_ms is not None:
            body["retry_after_ms"] = retry_after_ms
        if permanent:
            body["permanent"] = True
        return self.call("POST", f"/v1/jobs/{job['id']}/fail", body)


def handle(job):
    """The work. Here: greet whoever the payload names."""
    payload = job["payload"]
    name = payload.get("name", "world") if isinstance(payload, dict) else payload
    if name == "nobody":
        raise Permanent("there is nobody to greet")
    print(f"hello, {name} (job {job['id']}, attempt {job['attempt']} of {job['attempt_max']})", flush=True)


def heartbeat(client, job, lease_ms, stop):
    """Extends the lease every third of it until `stop` is set or the lease is lost."""
    while not stop.wait(lease_ms / 3000):
        try:
            client.extend(job, lease_ms)
        except LeaseLost:
            return
        except Exception as error:  # The server may be restarting; the lease outlasts a blip.
            print(f"heartbeat failed: {error}", file=sys.stderr, flush=True)


def work(client, job, lease_ms):
    stop = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(client, job, lease_ms, stop), daemon=True)
    beat.start()
    try:
        handle(job)
        client.complete(job)
        return "succeeded"
    except LeaseLost:
        return "lease lost"
    except Retry as error:
        client.fail(job, error, retry_after_ms=int(error.after_s * 1000))
        return "retrying"
    except Permanent as error:
        client.fail(job, error, permanent=True)
        return "dead"
    except Exception as error:
        client.fail(job, f"{type(error).__name__}: {error}")
        return "failed"
    finally:
        stop.set()
        beat.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("PUNCTUAL_URL", "http://127.0.0.1:7272"))
    parser.add_argument("--token", default=os.environ.get("PUNCTUAL_TOKEN"))
    parser.add_argument("--kind", action="append", required=True, help="a kind this worker runs (repeatable)")
    parser.add_argument("--worker", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--lease-ms", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--max-jobs", type=int, default=0, help="exit after this many jobs (0: never)")
    args = parser.parse_args()
    if not args.token:
        parser.error("give --token or PUNCTUAL_TOKEN")
    client = Punctual(args.url, args.token)
    done = 0
    while args.max_jobs == 0 or done < args.max_jobs:
        try:
            jobs = client.claim(args.worker, args.kind, args.batch, args.lease_ms, wait_ms=20000)
        except (OSError, RuntimeError) as error:
            print(f"claim failed: {error}; retrying in 1 s", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        for job in jobs:
            outcome = work(client, job, args.lease_ms)
            print(f"job {job['id']}: {outcome}", flush=True)
            done += 1


if __name__ == "__main__":
    main()
