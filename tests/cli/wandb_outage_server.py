"""A W&B server on loopback that fails mid-run: it answers the start-up calls the real ``wandb``
library makes, and from the first metrics upload on it accepts requests and never answers
(the worst kind of outage: no error to react to, only silence).

    python tests/wandb_outage_server.py   # prints the port it listens on, then serves
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUTAGE = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if "file_stream" in self.path:
            OUTAGE.set()
        if OUTAGE.is_set():
            threading.Event().wait()  # hang this connection for good
        body = json.dumps({"data": {}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
