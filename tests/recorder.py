"""A stand-in for PostgREST that records every request it receives and answers canned JSON.

Run inside the test network namespace: `python recorder.py PORT LOGFILE`. Each request is
appended to LOGFILE as one JSON line (method, path, query, headers, body, peer port).
Canned answers: the token `forbidden` (or `forbidden.<anything>`) gets 403 (permission
denied); as PostgREST 12.2.3 answers them (src/PostgREST/Error.hs): `expired` gets 401
with its WWW-Authenticate challenge, `ghost-role` 400 (a role claim naming no role:
PostgreSQL's 22023), `db-down` 503; a singular request
(Accept: application/vnd.pgrst.object+json) whose filter asks for the value `missing` gets
PostgREST's 406; `big=1` in the query gets a large body. A read of rows carries PostgREST's
`Content-Range` (`0-0/*`, or `0-0/1` with `Prefer: count=exact`).
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SINGULAR = "application/vnd.pgrst.object+json"
LOCK = threading.Lock()


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    log_path = ""

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        url = urlsplit(self.path)
        record = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "peer_port": self.client_address[1],
        }
        with LOCK, open(self.log_path, "a") as log:
            log.write(json.dumps(record) + "\n")
        extra: dict[str, str] = {}
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if token == "forbidden" or token.startswith("forbidden."):
            status, payload = 403, {"code": "42501", "message": "permission denied"}
        elif token == "expired":
            status, payload = 401, {"code": "PGRST301", "message": "JWT expired"}
            extra["WWW-Authenticate"] = ('Bearer error="invalid_token", '
                                         'error_description="JWT expired"')
        elif token == "ghost-role":
            status, payload = 400, {"code": "22023", "message": 'role "ghost" does not exist'}
        elif token == "db-down":
            status, payload = 503, {"code": "PGRST000", "message": "Database connection error"}
        elif self.headers.get("Accept") == SINGULAR and "eq.missing" in url.query:
            status, payload = 406, {"code": "PGRST116", "message": "JSON object requested, "
                                    "multiple (or no) rows returned"}
        elif "big=1" in url.query:
            status, payload = 200, [{"n": i, "text": "lorem ipsum " * 4} for i in range(200)]
        elif self.headers.get("Accept") == SINGULAR:
            status, payload = 200, {"canned": True}
        else:
            status, payload = (201 if self.command == "POST" else 200), [{"canned": True}]
        if status == 200 and self.command == "GET" and isinstance(payload, list):
            # PostgREST sends the range of every read, with the total when counted.
            counted = "count=exact" in self.headers.get("Prefer", "")
            extra["Content-Range"] = f"0-{len(payload) - 1}/{len(payload) if counted else '*'}"
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = handle_any

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops bursts of new connections
    daemon_threads = True


if __name__ == "__main__":
    Recorder.log_path = sys.argv[2]
    Server(("127.0.0.1", int(sys.argv[1])), Recorder).serve_forever()
