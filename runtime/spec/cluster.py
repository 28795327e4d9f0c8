"""Where a job runs: the `runtime:` section (Ray runtime env) and the `cluster:` shape of a
rendered KubeRay cluster."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from runtime.spec.base import Section, in_order


class RuntimeEnv(Section):
    """What `mlrt submit` adds to the Ray job's runtime_env (the working dir is always sent)."""

    pip: list[str] = Field([], description="extra pip requirements installed for the job")
    env_vars: dict[str, str] = Field({}, description="environment variables of the job")
    excludes: list[str] = Field([], description="more working-dir paths (gitignore syntax) "
                                                "not to upload")
    shared_storage: bool = Field(
        False, description="`storage` is a local path every node mounts (NFS): allowed on a "
                           "multi-node cluster")


_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_K8S_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"


class HeadGroup(Section):
    cpus: float = Field(2, gt=0)
    memory: str = Field("8Gi", pattern=_K8S_QUANTITY)


class WorkerGroup(Section):
    name: str = Field(pattern=_K8S_NAME, max_length=40)
    cpus: float = Field(4, gt=0)
    memory: str = Field("16Gi", pattern=_K8S_QUANTITY)
    gpus: int = Field(0, ge=0)
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> WorkerGroup:
        in_order("min_replicas", self.min_replicas, "max_replicas", self.max_replicas)
        return self


class ClusterShape(Section):
    """The Ray cluster a rendered KubeRay RayJob / RayService creates."""

    image: str = Field("mlrt:0.1.0", min_length=1,
                       description="image with Ray and mlrt installed (cluster/Dockerfile)")
    head: HeadGroup = HeadGroup()
    workers: list[WorkerGroup] = Field(
        [WorkerGroup(name="cpu", cpus=4, min_replicas=1, max_replicas=4)], min_length=1)

    @field_validator("workers")
    @classmethod
    def _unique_names(cls, groups: list[WorkerGroup]) -> list[WorkerGroup]:
        names = [g.name for g in groups]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"worker group names must be unique, repeated: {dupes}")
        return groups
