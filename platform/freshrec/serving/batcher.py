"""Micro-batching: concurrent requests that must run the encoder share one forward pass.

A request's profile is looked up in the encoder-state cache first; the few that miss (a new user,
a profile changed a moment ago) wait here up to ``max_wait`` for others, and go through the
encoder together: one forward pass for many texts costs less than one per text.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np


class MicroBatcher:
    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_batch: int = 16, max_wait: float = 0.005,
                 idle_exit: float = 30.0):
        self.encode, self.max_batch, self.max_wait, self.idle_exit = encode, max_batch, max_wait, idle_exit
        self._queue: queue.Queue[tuple[str, Future]] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches = 0  # forward passes run, for the metrics

    def __call__(self, text: str) -> np.ndarray:
        future: Future = Future()
        self._queue.put((text, future))
        self._ensure_worker()
        return future.result()

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="freshrec-encode-batcher", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:  # idle: end; the next request starts a new worker
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            batch, deadline = [first], time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                vectors = self.encode([text for text, _ in batch])
                self.batches += 1
                for (_, future), vector in zip(batch, vectors):
                    future.set_result(vector)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for _, future in batch:
                    future.set_exception(err)
