#!/usr/bin/env python3
"""A real gRPC server and load client for Vigil's e2e tests (grpcio, h2c).

Server: ``grpc_infer.py serve NAME`` prints ``PORT <n>`` and serves
``/vigil.test.Infer/Unary`` (unary) and ``/vigil.test.Infer/Stream``
(server streaming, ``chunks`` messages ``gap_ms`` apart) on 127.0.0.1, with
raw-bytes messages (no protobuf codegen). Failure injection:

* per call: request metadata ``x-fail: <CODE>`` answers that gRPC status;
* at run time, one command per stdin line: ``fail <ratio> <CODE>`` fails that
  share of calls, evenly spaced (0.2: exactly every 5th); ``stats`` prints one
  JSON line with the count of every status the server returned.

Failures alternate between trailers-only responses (aborted before any
message or header) and responses with headers first, so both ways Envoy
reads ``grpc-status`` are exercised. Every response carries ``x-served-by``
(initial and trailing metadata) and, when the call had one, ``x-seen-subset``.

Client: ``grpc_infer.py load TARGET RPS SECONDS [METHOD]`` runs an open loop
and prints one JSON line per finished call: scheduled offset ``t``, status
``code``, ``served_by``, ``subset`` and ``latency_ms``.
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "vigil.test.Infer"


class State:
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.ratio = 0.0
        self.code = grpc.StatusCode.OK
        self.seq = 0
        self.failures = 0
        self.counts = {}

    def decide(self, forced):
        with self.lock:
            if forced is not None:
                code = forced
            else:
                k = self.seq
                self.seq += 1
                r = self.ratio
                fail = r > 0 and int((k + 1) * r + 1e-9) > int(k * r + 1e-9)
                code = self.code if fail else grpc.StatusCode.OK
            self.counts[code.name] = self.counts.get(code.name, 0) + 1
            trailers_only = False
            if code != grpc.StatusCode.OK:
                self.failures += 1
                trailers_only = self.failures % 2 == 0
            return code, trailers_only


def code_by_name(name):
    try:
        return grpc.StatusCode[name.upper()]
    except KeyError:
        raise SystemExit(f"unknown gRPC status code {name!r}")


def serve(name):
    state = State(name)

    def common(context):
        md = dict(context.invocation_metadata())
        forced = md.get("x-fail")
        code, trailers_only = state.decide(code_by_name(forced) if forced else None)
        served = (("x-served-by", state.name),)
        subset = md.get("x-vigil-subset")
        if subset:
            served += (("x-seen-subset", subset),)
        context.set_trailing_metadata(served)
        return code, trailers_only, served

    def unary(request, context):
        code, trailers_only, served = common(context)
        if code != grpc.StatusCode.OK and trailers_only:
            context.abort(code, "injected")
        context.send_initial_metadata(served)
        time.sleep(0.001)
        if code != grpc.StatusCode.OK:
            context.abort(code, "injected")
        return b"ok " + state.name.encode()

    def stream(request, context):
        code, trailers_only, served = common(context)
        if code != grpc.StatusCode.OK and trailers_only:
            context.abort(code, "injected")
        context.send_initial_metadata(served)
        for i in range(5):
            time.sleep(0.005)
            yield f"token {i}".encode()
        if code != grpc.StatusCode.OK:
            context.abort(code, "injected")

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "fail" and len(parts) == 3:
            with state.lock:
                state.ratio = float(parts[1])
                state.code = code_by_name(parts[2])
                state.seq = 0
            print("OK", flush=True)
        elif parts[0] == "stats":
            with state.lock:
                print(json.dumps(state.counts), flush=True)
    server.stop(0)


def load(target, rps, seconds, method="Unary"):
    channel = grpc.insecure_channel(target)
    path = f"/{SERVICE}/{method}"
    if method == "Stream":
        call = channel.unary_stream(path)
    else:
        call = channel.unary_unary(path)
    out_lock = threading.Lock()
    pending = []
    start = time.monotonic()

    def report(t, sent, code, md):
        served = md.get("x-served-by")
        line = json.dumps(
            {
                "t": round(t, 4),
                "code": code,
                "served_by": served,
                "subset": md.get("x-seen-subset"),
                "latency_ms": round((time.monotonic() - sent) * 1000, 3),
            }
        )
        with out_lock:
            print(line, flush=True)

    def unary_done(t, sent):
        def cb(fut):
            md = {}
            try:
                for k, v in (fut.trailing_metadata() or ()):
                    md[k] = v
            except Exception:
                pass
            code = fut.code().name if fut.code() else "UNKNOWN"
            report(t, sent, code, md)

        return cb

    def stream_call(t, sent):
        md = {}
        try:
            it = call(b"x", timeout=10)
            for _ in it:
                pass
            code = it.code().name
            for k, v in (it.trailing_metadata() or ()):
                md[k] = v
        except grpc.RpcError as e:
            code = e.code().name
            for k, v in (e.trailing_metadata() or ()):
                md[k] = v
        report(t, sent, code, md)

    pool = futures.ThreadPoolExecutor(max_workers=64) if method == "Stream" else None
    n = int(rps * seconds)
    for i in range(n):
        t = i / rps
        delay = start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic()
        if pool is not None:
            pending.append(pool.submit(stream_call, t, sent))
        else:
            fut = call.future(b"x", timeout=10)
            fut.add_done_callback(unary_done(t, sent))
            pending.append(fut)
    for f in pending:
        try:
            f.result(timeout=15)
        except Exception:
            pass
    time.sleep(0.2)
    channel.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "load":
        load(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:6])
    else:
        raise SystemExit(__doc__)
