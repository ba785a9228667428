#!/usr/bin/env python3
"""A real streaming (SSE over HTTP/1.1 chunked) upstream for Vigil's e2e tests.

``sse_infer.py serve NAME`` prints ``PORT <n>`` and answers every request
with ``content-type: text/event-stream``, ``transfer-encoding: chunked``:
headers at once, then ``chunks`` events (``data: token i``), the first after
``ttft_ms`` and the rest ``gap_ms`` apart. Per-chunk timing and faults are set
at run time, one command per stdin line (each answered ``OK``):

* ``shape <ttft_ms> <gap_ms> <chunks>``: the stream's timing;
* ``cut <ratio>``: that share of streams (evenly spaced) is cut after half of
  its chunks: the connection is closed without the terminating chunk, as a
  crashed model server would (Envoy logs ``UPE``);
* ``stats``: one JSON line ``{"streams": n, "cut": n}``.

Responses carry ``x-served-by`` and, when the request had one, ``x-seen-subset``.
"""
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.ttft_ms = 50.0
        self.gap_ms = 10.0
        self.chunks = 10
        self.cut_ratio = 0.0
        self.seq = 0
        self.streams = 0
        self.cut = 0

    def next(self):
        with self.lock:
            k = self.seq
            self.seq += 1
            r = self.cut_ratio
            cut = r > 0 and int((k + 1) * r + 1e-9) > int(k * r + 1e-9)
            self.streams += 1
            if cut:
                self.cut += 1
            return self.ttft_ms, self.gap_ms, self.chunks, cut


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            ttft, gap, chunks, cut = state.next()
            subset = self.headers.get("x-vigil-subset")
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-served-by", state.name)
            if subset:
                self.send_header("x-seen-subset", subset)
            self.end_headers()
            self.wfile.flush()
            time.sleep(ttft / 1000.0)
            upto = chunks // 2 if cut else chunks
            for i in range(upto):
                if i > 0:
                    time.sleep(gap / 1000.0)
                data = f"data: token {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            if cut:
                # Abort: RST, no terminating chunk.
                try:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                except OSError:
                    pass
                self.close_connection = True
                self.connection.close()
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def serve(name):
    state = State(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        with state.lock:
            if parts[0] == "shape" and len(parts) == 4:
                state.ttft_ms, state.gap_ms, state.chunks = float(parts[1]), float(parts[2]), int(parts[3])
                print("OK", flush=True)
            elif parts[0] == "cut" and len(parts) == 2:
                state.cut_ratio = float(parts[1])
                state.seq = 0
                print("OK", flush=True)
            elif parts[0] == "stats":
                print(json.dumps({"streams": state.streams, "cut": state.cut}), flush=True)
    server.shutdown()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        raise SystemExit(__doc__)
