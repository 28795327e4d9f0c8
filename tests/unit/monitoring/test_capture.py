"""Unit: the capture writer of runtime/monitoring/capture.py over real parquet files (local
filesystem through pyarrow): sampling, exclude, hash, bounded queue, flush on close, a sink
that is down, memory that stays bounded. No Ray."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from runtime.monitoring.capture import (
    BatchWriter,
    CaptureRows,
    Chunk,
    ParquetSink,
    label_tables,
    new_writer_id,
)
from runtime.monitoring.layout import CAPTURE_META, HASH_PREFIX, captures_root, labels_root

FEATURES = ("age", "email", "color")


def _chunk(i: int, rows: int = 1, numeric: bool = False) -> Chunk:
    if numeric:
        data = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) + i
        names, categorical = ("a", "b"), frozenset()
    else:
        data = [[30.0 + i, f"u{i}@x.org", "red" if i % 2 else None] for _ in range(rows)]
        names, categorical = FEATURES, frozenset({"email", "color"})
    labels = np.array([i % 2] * rows)
    proba = np.tile([0.25, 0.75], (rows, 1))
    return Chunk(f"req-{i}", time.time_ns(), "m", "3", "champion", "stable", names,
                 categorical, data, labels, proba, 1.5)


def _writer(tmp_path, rows: CaptureRows | None = None, **options) -> BatchWriter:
    rows = rows or CaptureRows()
    sink = ParquetSink(captures_root(str(tmp_path), "m"), new_writer_id())
    settings = {"queue_rows": 1000, "batch_rows": 100, "flush_s": 60, **options}
    return BatchWriter(sink, rows.tables, **settings)


def _read(tmp_path, kind: str = "captures"):
    root = (captures_root if kind == "captures" else labels_root)(str(tmp_path), "m")
    files = sorted(Path(root).rglob("*.parquet"))
    return files, (pq.read_table(files, partitioning=None).to_pandas() if files else None)


def test_rows_land_with_the_layout_columns_after_close(tmp_path):
    w = _writer(tmp_path)
    for i in range(5):
        assert w.offer(_chunk(i), 1)
    assert _read(tmp_path)[0] == []  # nothing before a flush
    w.close()
    files, df = _read(tmp_path)
    assert len(files) == 1 and files[0].parent.name.startswith("date=")
    assert list(df.columns) == [*CAPTURE_META, *FEATURES]
    assert df["request_id"].tolist() == [f"req-{i}" for i in range(5)]
    assert df["prediction"].tolist() == ["0", "1", "0", "1", "0"]
    assert df["probabilities"].iloc[0].tolist() == [0.25, 0.75]
    assert df["color"].isna().tolist()[:2] == [True, False] and df["color"].iloc[1] == "red"
    assert df["age"].iloc[4] == 34.0
    assert str(df["time"].dtype) == "datetime64[us, UTC]"
    assert not list(files[0].parent.glob(".*"))  # no temporary file left


def test_numeric_matrices_and_several_rows_per_request(tmp_path):
    w = _writer(tmp_path)
    w.offer(_chunk(0, rows=3, numeric=True), 3)
    w.close()
    df = _read(tmp_path)[1]
    assert df["a"].tolist() == [0.0, 2.0, 4.0] and set(df["request_id"]) == {"req-0"}


def test_flush_every_flush_s_on_the_background_thread(tmp_path):
    w = _writer(tmp_path, flush_s=0.2)
    w.offer(_chunk(0), 1)
    deadline = time.monotonic() + 10
    while not _read(tmp_path)[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_read(tmp_path)[0]) == 1
    w.close()


def test_a_full_batch_is_written_before_flush_s_in_files_of_batch_rows(tmp_path):
    w = _writer(tmp_path, batch_rows=10, queue_rows=100, flush_s=3600)
    for i in range(25):
        w.offer(_chunk(i), 1)
    deadline = time.monotonic() + 10
    while w.written < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.written >= 20  # two full batches went without waiting an hour
    w.close()
    files, df = _read(tmp_path)
    assert len(df) == 25 and all(pq.read_metadata(f).num_rows <= 10 for f in files)


def test_exclude_and_hash(tmp_path):
    rows = CaptureRows(exclude=["age"], hash_=["email"], salt=b"pepper")
    w = _writer(tmp_path, rows)
    w.offer(_chunk(1), 1)
    w.offer(_chunk(1), 1)
    w.offer(_chunk(2), 1)
    w.close()
    df = _read(tmp_path)[1]
    assert "age" not in df.columns
    emails = df["email"].tolist()
    assert all(e.startswith(HASH_PREFIX) and "u1" not in e for e in emails)
    assert emails[0] == emails[1] != emails[2]  # same value, same hash: still countable
    other_salt = CaptureRows(hash_=["email"], salt=b"other").hashed("u1@x.org")
    assert other_salt != emails[0]  # the salt matters: no rainbow table of emails
    assert rows.hashed(3) == rows.hashed(3.0) == rows.hashed("3") and rows.hashed(None) is None


def test_hashing_needs_a_salt():
    with pytest.raises(ValueError, match="salt"):
        CaptureRows(hash_=["email"])


def test_sampling_keeps_about_that_share_of_rows(tmp_path):
    rows = CaptureRows(sample=0.2, seed=0)
    kept = [len(rows.sampled(100)) for _ in range(50)]
    assert 0.15 < sum(kept) / 5000 < 0.25
    assert CaptureRows(sample=1.0).sampled(10) is None


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path):
    dropped: list[tuple[int, str]] = []
    w = _writer(tmp_path, queue_rows=10, batch_rows=10, flush_s=3600,
                on_dropped=lambda n, reason: dropped.append((n, reason)))
    w._write_lock.acquire()  # a writer stuck on a slow sink
    try:
        started = time.perf_counter()
        results = [w.offer(_chunk(i), 1) for i in range(30)]
        assert time.perf_counter() - started < 1.0
    finally:
        w._write_lock.release()
    assert results.count(True) == 10  # the queue's room; the writer took nothing out
    assert w.dropped == results.count(False) > 0
    assert sum(n for n, _ in dropped) == w.dropped and {r for _, r in dropped} == {"queue_full"}
    w.close()


class _DownSink:
    def __init__(self):
        self.calls = 0

    def write(self, table, first_time_ns):
        self.calls += 1
        raise OSError("connection refused")


def test_a_sink_that_is_down_drops_counted_and_the_writer_goes_on(tmp_path):
    sink = _DownSink()
    reasons: list[str] = []
    w = BatchWriter(sink, CaptureRows().tables, queue_rows=100, batch_rows=10, flush_s=3600,
                    on_dropped=lambda n, reason: reasons.append(reason))
    for i in range(15):
        assert w.offer(_chunk(i), 1)
    w.flush()
    assert sink.calls == 2 and w.dropped == 15 and w.written == 0 and w.queued == 0
    assert set(reasons) == {"sink_error"}
    assert w.offer(_chunk(99), 1)  # still accepting
    w.close()
    assert w.dropped == 16


def test_an_unwritable_path_counts_drops(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = ParquetSink(captures_root(str(blocker), "m"), new_writer_id())
    w = BatchWriter(sink, CaptureRows().tables, queue_rows=100, batch_rows=10, flush_s=3600)
    w.offer(_chunk(0), 1)
    w.close()
    assert w.dropped == 1 and w.written == 0


def test_closed_writer_refuses_rows_counted(tmp_path):
    w = _writer(tmp_path)
    w.close()
    assert not w.offer(_chunk(0), 1) and w.dropped == 1


def test_memory_stays_bounded_when_the_sink_is_slow(tmp_path):
    """A slow sink with traffic far above what it can write: the queue stays at queue_rows."""
    class Slow:
        def write(self, table, first_time_ns):
            time.sleep(0.2)

    w = BatchWriter(Slow(), CaptureRows().tables, queue_rows=200, batch_rows=50, flush_s=0.05)
    tracemalloc.start()
    stop = time.monotonic() + 1.5
    peak_queue = 0
    chunk = _chunk(0, rows=1)
    sent = 0
    while time.monotonic() < stop:
        for _ in range(500):
            w.offer(chunk, 1)
            sent += 1
        peak_queue = max(peak_queue, w.queued)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak_queue <= 200
    assert w.dropped > sent * 0.5  # most of it was dropped, not held
    assert peak < 20_000_000, peak
    w.close(timeout_s=5)


def test_offers_from_many_threads_are_all_counted(tmp_path):
    w = _writer(tmp_path, queue_rows=500, batch_rows=50, flush_s=0.05)

    def send():
        for i in range(200):
            w.offer(_chunk(i), 1)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert w.written + w.dropped == 800
    assert len(_read(tmp_path)[1]) == w.written


def test_labels_table(tmp_path):
    sink = ParquetSink(labels_root(str(tmp_path), "m"), new_writer_id())
    w = BatchWriter(sink, lambda chunks: label_tables(chunks, regression=False),
                    queue_rows=100, batch_rows=100, flush_s=3600)
    w.offer((["a", "b"], ["1", "0"], time.time_ns()), 2)
    w.close()
    df = _read(tmp_path, "labels")[1]
    assert list(df.columns) == ["request_id", "label", "time"]
    assert df["label"].tolist() == ["1", "0"]


def test_a_bad_writer_id_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match="writer id"):
        ParquetSink(str(tmp_path), "no/slash")


def test_sampled_rows_and_a_regressor_without_probabilities(tmp_path):
    w = _writer(tmp_path)
    c = _chunk(0, rows=4, numeric=True)
    regressor = Chunk(c.request_id, c.time_ns, "m", "3", None, "canary", c.features,
                      c.categorical, c.rows, np.array([0.5, 1.5, 2.5, 3.5]), None, 2.0,
                      keep=np.array([1, 3]))
    w.offer(regressor, 2)
    w.close()
    df = _read(tmp_path)[1]
    assert df["a"].tolist() == [2.0, 6.0] and df["prediction"].tolist() == ["1.5", "3.5"]
    assert df["probabilities"].isna().all() and df["arm"].tolist() == ["canary"] * 2
    assert df["alias"].isna().all()



def test_an_object_store_is_opened_at_the_first_write_not_at_replica_start():
    """Opening s3:// may ask the network; a store that is down must cost drops (the unwritable
    path tests above), never the replica's start."""
    sink = ParquetSink("s3://bucket/x?endpoint_override=127.0.0.1:1&scheme=http", "w1")
    assert sink.fs is None


def test_drops_are_logged_at_most_once_a_minute(tmp_path, caplog):
    w = _writer(tmp_path, queue_rows=1, batch_rows=1, flush_s=3600)
    w._write_lock.acquire()  # the writer is stuck: every offer after the first is dropped
    try:
        with caplog.at_level("WARNING", logger="mlrt.capture"):
            for i in range(100):
                w.offer(_chunk(i), 1)
    finally:
        w._write_lock.release()
    lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert w.dropped == 99 and len(lines) == 1
    assert "queue_full" in lines[0].getMessage()
    w.close()


def test_a_flush_larger_than_a_slice_keeps_every_row_in_order_in_one_file(tmp_path):
    from runtime.monitoring.capture import SLICE_CHUNKS

    n = 2 * SLICE_CHUNKS + 7  # three slices, the last one short
    w = _writer(tmp_path, queue_rows=10 * n, batch_rows=5 * n)
    for i in range(n):
        w.offer(_chunk(i, rows=1 + i % 2), 1 + i % 2)  # one- and two-row requests mixed
    w.close()
    files, df = _read(tmp_path)
    assert len(files) == 1  # the slices are one table, one file
    expected = [f"req-{i}" for i in range(n) for _ in range(1 + i % 2)]
    assert df["request_id"].tolist() == expected
    assert df["age"].tolist() == [30.0 + i for i in range(n) for _ in range(1 + i % 2)]
    assert df["probabilities"].map(list).tolist() == [[0.25, 0.75]] * len(expected)


def test_rows_offered_during_a_write_wait_for_the_next_flush(tmp_path):
    """Steady traffic while a file is written: the flush writes what was queued when it began
    and returns; it does not chase the new rows with a file of a few rows each."""
    class Busy:  # each of the first few writes sees 3 more requests arrive
        def __init__(self):
            self.tables: list = []

        def write(self, table, first_time_ns):
            self.tables.append(table.num_rows)
            if len(self.tables) <= 4:  # bounded: a flush that chases newcomers fails, not hangs
                for i in range(3):
                    w.offer(_chunk(100 + i), 1)

    sink = Busy()
    w = BatchWriter(sink, CaptureRows().tables, queue_rows=1000, batch_rows=100, flush_s=3600)
    for i in range(20):
        w.offer(_chunk(i), 1)
    assert w.flush() == 20
    assert sink.tables == [20] and w.queued == 3  # one file; the 3 newcomers are queued
    assert w.flush() == 3 and sink.tables == [20, 3]
    w.close()
