"""Where the audit trail lives and how an event is written: one file (object) per event.

    {storage}/audit/{model}/000000000000.json          local folders: exclusive names
    {storage}/audit/{model}/000000000007-3f9a...json   object stores (s3://...): unique names

Through pyarrow filesystems (`FileSystem.from_uri`: local paths, s3://, gs://; Arrow itself
reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 for S3-compatible stores).

Atomic: an event is never visible half written. Locally it is written to a temporary file and
hard-linked to its final name, and a link fails when the name exists, so two writers can never
both take sequence number N: the loser re-reads the log and appends after the winner. An
object store makes a whole PUT visible at once, but pyarrow cannot send a conditional PUT, so
there two writers racing for N would overwrite each other; instead each event's name carries
its own hash, nothing is ever overwritten, and a race leaves two events at one number, which
`mlrt audit --verify` reports as a fork naming both (concurrent writers, not tampering).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import AuditError, InputError

_NAME = re.compile(r"^(\d{12})(?:-([0-9a-f]{16}))?\.json$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # as JobSpec.name: one path segment
_ATTEMPTS = 50


@dataclass(frozen=True)
class Stored:
    """One event file as found: its sequence number (from the name), name and raw text."""

    seq: int
    name: str
    text: str


class AuditStore:
    """The event files of one model's trail on one filesystem."""

    def __init__(self, fs, root: str):
        self.fs, self.root = fs, root.rstrip("/")
        self.exclusive = fs.type_name == "local"  # hard links: create-if-absent

    @classmethod
    def open(cls, storage: str, model: str) -> AuditStore:
        if not _MODEL.match(model):
            raise InputError(f"model name: '{model}' is not a registered-model name (letters, "
                             "digits, _ . -)")
        if "://" in storage:
            from runtime.data.fs import open_uri

            try:  # AWS_ENDPOINT_URL honoured for s3://
                fs, path = open_uri(storage.rstrip("/"))
            except (OSError, ValueError) as e:
                raise AuditError(f"audit: cannot open storage {storage}: {e}") from e
            return cls(fs, f"{path}/audit/{model}")
        from pyarrow.fs import LocalFileSystem

        return cls(LocalFileSystem(), str(Path(storage).absolute() / "audit" / model))

    def names(self) -> dict[int, list[str]]:
        """Sequence number -> the event names at it (more than one only after a race on an
        object store)."""
        from pyarrow.fs import FileSelector

        try:
            infos = self.fs.get_file_info(FileSelector(self.root, allow_not_found=True))
        except OSError as e:
            raise AuditError(f"audit: cannot list {self.root}: {e}") from e
        found: dict[int, list[str]] = {}
        for info in infos:
            match = _NAME.match(info.base_name)
            if match:
                found.setdefault(int(match[1]), []).append(info.base_name)
        return {seq: sorted(names) for seq, names in sorted(found.items())}

    def read(self, name: str) -> str:
        try:
            with self.fs.open_input_stream(f"{self.root}/{name}") as f:
                return f.read().decode()
        except OSError as e:
            raise AuditError(f"audit: cannot read {self.root}/{name}: {e}") from e

    def read_all(self) -> list[Stored]:
        return [Stored(seq, name, self.read(name))
                for seq, names in self.names().items() for name in names]

    def append(self, build) -> dict:
        """Write the event `build(seq, tail)` at the next free sequence number, where `tail`
        is the raw text of the current last event (None for the first). Retries when another
        writer took the number first (local folders)."""
        for _ in range(_ATTEMPTS):
            names = self.names()
            seq = max(names) + 1 if names else 0
            tail = self.read(names[seq - 1][0]) if names else None
            event = build(seq, tail)
            text = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if self._write(seq, event["hash"], text):
                return event
            time.sleep(random.uniform(0.001, 0.02))  # another writer took seq: re-read
        raise AuditError(f"audit: could not append to {self.root}: {_ATTEMPTS} writers raced")

    def _write(self, seq: int, digest: str, text: str) -> bool:
        try:
            self.fs.create_dir(self.root, recursive=True)
            if not self.exclusive:
                with self.fs.open_output_stream(f"{self.root}/{seq:012d}-{digest[:16]}.json") as f:
                    f.write(text.encode())
                return True
            return _link_new(Path(self.root), f"{seq:012d}.json", text)
        except OSError as e:
            raise AuditError(f"audit: cannot write to {self.root}: {e}") from e


def _link_new(folder: Path, name: str, text: str) -> bool:
    """Write `text` to a temporary file, flush it to disk, then hard-link it as `name`: the
    name appears with the whole event or not at all, and only if nobody holds it yet."""
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, folder / name)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
