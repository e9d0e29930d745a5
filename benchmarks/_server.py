"""A local OpenAI-compatible chat-completions server for the benchmarks (127.0.0.1 only).

Run as a separate process (``python benchmarks/_server.py --delay 0.05``) so that its work does not share
the client's interpreter; it prints ``PORT <n>`` on its first line. ``POST /v1/chat/completions`` answers
``Choice: 1 Reasoning: benchmark`` after ``--delay`` seconds (with log-probs when asked); at most
``--max-inflight`` requests are served at once (the rest queue, like a server with a fixed batch).
``GET /count`` returns the number of completions served so far.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOGPROBS = [{"token": "Choice", "logprob": 0.0, "top_logprobs": []},
            {"token": ":", "logprob": 0.0, "top_logprobs": []},
            {"token": " 1", "logprob": math.log(0.7), "top_logprobs": [
                {"token": " 1", "logprob": math.log(0.7)}, {"token": " 0", "logprob": math.log(0.2)},
                {"token": " 2", "logprob": math.log(0.1)}]}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-inflight", type=int, default=0, help="0: unlimited")
    args = parser.parse_args()
    lock = threading.Lock()
    gate = threading.BoundedSemaphore(args.max_inflight) if args.max_inflight else None
    state = {"count": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def setup(self):
            super().setup()
            # headers and body go out as two writes: without this, Nagle + delayed ACK add ~40 ms each
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            with lock:
                self._send({"count": state["count"]})

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if gate is not None:
                gate.acquire()
            try:
                if args.delay:
                    time.sleep(args.delay)
            finally:
                if gate is not None:
                    gate.release()
            with lock:
                state["count"] += 1
            choice = {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "Choice: 1 Reasoning: benchmark"}}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": LOGPROBS}
            self._send({"id": "b", "object": "chat.completion", "choices": [choice]})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
