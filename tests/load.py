"""A load client for serving tests: threads posting one row each, back to back, until stopped.
Every outcome is recorded, a request that got no answer too (a dropped connection must fail a
test, not end its thread silently)."""

from __future__ import annotations

import threading

import httpx


class Load:
    """`results`: (status, served version) per answer, (None, repr(error)) per request that got
    no answer."""

    def __init__(self, url: str, row: list, threads: int = 4, headers: dict | None = None,
                 timeout_s: float = 60):
        self.url, self.row, self.headers, self.timeout_s = url, row, headers or {}, timeout_s
        self.stop = threading.Event()
        self.results: list[tuple[int | None, str | None]] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, headers=self.headers) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(f"{self.url}/predict", json={"instances": [self.row]})
                    outcome = (r.status_code, r.json()["model"]["version"]
                               if r.status_code == 200 else None)
                except (httpx.HTTPError, ValueError) as e:
                    outcome = (None, repr(e))
                with self._lock:
                    self.results.append(outcome)

    @property
    def ok(self) -> int:
        with self._lock:
            return sum(1 for status, _ in self.results if status == 200)

    @property
    def failed(self) -> list[tuple[int | None, str | None]]:
        with self._lock:
            return [r for r in self.results if r[0] != 200]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)
