"""The `serve:` section: route, replicas and autoscaling, batching, auth, canary, capture."""

from __future__ import annotations

from pydantic import Field, model_validator

from runtime.monitoring.layout import CAPTURE_META
from runtime.spec.base import FieldError, Section, in_order


class Replicas(Section):
    min: int = Field(1, ge=0)
    max: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        in_order("min", self.min, "max", self.max)
        return self


class Batch(Section):
    max_size: int = Field(32, ge=1)
    wait_ms: float = Field(5, ge=0)


class Auth(Section):
    api_key_env: str = Field(pattern=r"^[A-Za-z_]\w*$")


class Canary(Section):
    alias: str = "challenger"
    weight: float = Field(0.1, gt=0, lt=1)


class Capture(Section):
    """Request capture (runtime/monitoring/capture.py): the section's presence turns it on.
    `hash`ed features are stored as sha256(salt + value); the salt is read from the env var
    `salt_env` in each replica and never written with the captures."""

    sample: float = Field(1.0, gt=0, le=1, description="share of predicted rows captured")
    exclude: list[str] = Field(default_factory=list, description="features never stored")
    hash: list[str] = Field(default_factory=list, description="features stored as a salted "
                                                               "hash (ids, emails)")
    salt_env: str = Field("MLRT_CAPTURE_SALT", pattern=r"^[A-Za-z_]\w*$",
                          description="env var holding the salt for `hash` (required then)")
    flush_s: float = Field(5, gt=0, le=3600, description="seconds between writes: at most "
                                                         "this much is lost on a crash")
    queue_rows: int = Field(10_000, ge=1, le=1_000_000, description="rows held per replica "
                            "before new ones are dropped (counted)")
    batch_rows: int = Field(5_000, ge=1, le=1_000_000, description="rows per parquet file at "
                            "most; a full batch is written before flush_s")

    @model_validator(mode="after")
    def _names(self) -> Capture:
        in_order("batch_rows", self.batch_rows, "queue_rows", self.queue_rows)
        for field in ("exclude", "hash"):
            for i, name in enumerate(getattr(self, field)):
                if name in CAPTURE_META:
                    raise FieldError((field, i), f"'{name}' is a column every captured row "
                                     f"has ({', '.join(CAPTURE_META)}); a feature cannot be "
                                     "captured under that name")
        both = sorted(set(self.exclude) & set(self.hash))
        if both:
            raise FieldError(("hash",), f"{both} also excluded: a feature is either dropped or "
                                        "hashed")
        return self


class Serve(Section):
    route: str = Field("/", pattern=r"^/[\w/-]*$")
    replicas: Replicas = Replicas()
    max_queued_requests: int = Field(100, ge=-1)
    max_payload_bytes: int = Field(1_000_000, ge=1)
    batch: Batch = Batch()
    cpus_per_replica: float = Field(0.5, gt=0)
    auth: Auth | None = None
    canary: Canary | None = None
    capture: Capture | None = None
