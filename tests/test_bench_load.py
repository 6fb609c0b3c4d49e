"""The load generator's turns (``bench.serving._in_turns``), against two real HTTP servers: each server's
targets carry on across its turns on one connection, the servers alternate, and failures are counted."""
import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from freshrec.bench.serving import _in_turns


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client

    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.seen.append((time.perf_counter(), self.path, self.client_address[1]))
        status = 500 if self.path.endswith("/fail") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _server() -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.seen = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_turns_carry_on_through_the_targets_alternate_and_count_failures():
    a, b = _server(), _server()
    try:
        targets_a = [f"/a/{n}" for n in range(100_000)]  # more than a run sends: no wrap-around
        targets_b = ["/b/0", "/b/fail"]
        out = asyncio.run(_in_turns({"a": (f"http://127.0.0.1:{a.server_port}", targets_a),
                                     "b": (f"http://127.0.0.1:{b.server_port}", targets_b)}, seconds=1.0, rounds=4))
    finally:
        a.shutdown()
        b.shutdown()
    paths_a = [p for _, p, _ in a.seen]
    assert paths_a == targets_a[: len(paths_a)]  # in order across turns: no turn starts over
    assert len({port for _, _, port in a.seen}) == 1 and len({port for _, _, port in b.seen}) == 1
    latencies_a, errors_a, seconds_a = out["a"]
    assert len(latencies_a) == len(paths_a) and errors_a == 0 and 0.9 < seconds_a < 1.5
    latencies_b, errors_b, _ = out["b"]
    assert errors_b == len(b.seen) // 2 and len(latencies_b) == len(b.seen) - errors_b
    # Four turns each, alternating: a's requests fall into four runs separated by b's.
    times = sorted([(t, "a") for t, _, _ in a.seen] + [(t, "b") for t, _, _ in b.seen])
    switches = sum(1 for (_, x), (_, y) in zip(times, times[1:]) if x != y)
    assert switches == 7
