"""Processes a benchmark (or a test) starts and waits for: `freshrec serve`, `feast serve`, a watcher."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]


def spawn(cmd: list[str], env: dict, log: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` from the repository root, its output to ``log`` (a pipe nobody reads would fill and
    stall it)."""
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, path: str = "/readyz", timeout: float = 300, proc: subprocess.Popen | None = None) -> None:
    """Until ``url + path`` answers 200; fails at once if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url}{path} did not answer 200 within {timeout:.0f} s")


def stop(processes: list[subprocess.Popen | None], grace_s: float = 60) -> None:
    """Ask each process to stop, then wait for each, killing any still running after ``grace_s``: one
    that hangs must not leave the others running."""
    running = [p for p in processes if p is not None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
