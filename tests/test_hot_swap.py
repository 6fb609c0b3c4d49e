"""Hot swap under load, over real HTTP: clients keep querying while `freshrec promote` and
`freshrec rollback` move the pointer. No request fails, every answer names the old or the new
version, and once a client has seen the new version no later request gets the old one.
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from conftest import free_port

from freshrec.serving import create_app

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 4


def _client(base, stop, log, failures):
    with httpx.Client(base_url=base, timeout=30) as http:
        i = 0
        while not stop.is_set():
            path = "/v1/users/12347/recommendations?k=5" if i % 2 else "/v1/search?q=lunch+bag&k=5"
            started = time.monotonic()
            try:
                r = http.get(path)
                if r.status_code != 200:
                    failures.append((path, r.status_code, r.text))
                else:
                    log.append((started, time.monotonic(), r.json()["version"]))
            except httpx.HTTPError as err:
                failures.append((path, repr(err)))
            i += 1


def _cli(*args) -> tuple[float, float]:
    """Run a freshrec command; when it started and when it returned (the commit lies in between)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.monotonic()
    proc = subprocess.run(["freshrec", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return started, time.monotonic()


def _first_seen(log, version, after):
    return min(end for start, end, v in log if v == version and start >= after)


def test_promote_and_rollback_under_load(served_db):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)

    stop, log, failures = threading.Event(), [], []
    clients = [threading.Thread(target=_client, args=(base, stop, log, failures)) for _ in range(CLIENTS)]
    try:
        for c in clients:
            c.start()
        time.sleep(1.0)
        promote = _cli("promote", "1", "--reason", "hot swap test")
        time.sleep(3.0)
        rollback = _cli("rollback", "--reason", "hot swap test")
        time.sleep(3.0)
    finally:
        stop.set()
        for c in clients:
            c.join()
        server.should_exit = True

    assert failures == []
    assert {v for _, _, v in log} == {1, 2} and len(log) > 50
    assert all(v == 2 for start, _, v in log if start < promote[0])
    seen_1 = _first_seen(log, 1, promote[0])
    seen_2 = _first_seen(log, 2, rollback[0])
    assert seen_1 - promote[1] < 3.0 and seen_2 - rollback[1] < 3.0  # within seconds of the command, no restart
    # Once any client saw the new version, no request started later got the old one.
    assert all(v == 1 for start, _, v in log if seen_1 < start < rollback[0])
    assert all(v == 2 for start, _, v in log if start > seen_2)
    print(f"\n{len(log)} requests, 0 failed; promote seen {seen_1 - promote[0]:.2f} s after the command started "
          f"({promote[1] - promote[0]:.2f} s to run), rollback {seen_2 - rollback[0]:.2f} s")
