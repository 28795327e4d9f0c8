"""Peak memory of a benchmarked process tree, sampled from outside it (one helper for every
benchmark that compares memory: the child's own getrusage misses the processes it starts)."""

from __future__ import annotations

import threading


class TreeSampler(threading.Thread):
    """Peak of the summed RSS and PSS of a process and all its descendants."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.peak_rss = self.peak_pss = 0
        self.peak_procs: list[str] = []
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss, pss, names = 0, 0, []
            for proc in procs:
                try:
                    info = proc.memory_full_info()  # smaps_rollup: cheap, and gives PSS
                    rss, pss = rss + info.rss, pss + info.pss
                    names.append(proc.name())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            if rss > self.peak_rss:
                self.peak_rss, self.peak_procs = rss, names
            self.peak_pss = max(self.peak_pss, pss)
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join()
