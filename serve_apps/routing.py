"""Which model version answers a request: the versions a replica has loaded, the routing
between champion and canary, and the resolver that polls the registry's aliases.

Zero-downtime updates: the replica's poller calls `VersionRouter.resolve()` every `poll_s`; a
new version is loaded beside the old one and swapped in with one assignment of a new `Routing`.
A request keeps the routing it started with, so no request fails during the switch.
Canary: `serve.canary` sends `weight` of the requests to the canary alias's version, while it
differs from the champion and has not been rolled back from (registry tag).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from runtime.registry.versions import ROLLED_BACK_TAG
from serve_apps.protocols import ModelInfo
from serve_apps.validate import Features

if TYPE_CHECKING:
    from serve_apps.config import AppArgs


@dataclass(frozen=True, eq=False)
class Loaded:
    """One loaded model version (compared by identity: the registry reuses loaded ones)."""

    name: str
    version: str
    predictor: Any
    features: Features
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None

    @cached_property
    def info(self) -> ModelInfo:
        """The version as the protocol adapters see it."""
        classes = self.predictor.classes
        return ModelInfo(self.name, self.version, self.features,
                         None if classes is None else tuple(classes))


@dataclass(frozen=True)
class Routing:
    """What serves right now; replaced whole (one assignment) when an alias moves."""

    champion: Loaded
    alias: str | None
    challenger: Loaded | None = None
    weight: float = 0.0

    def pick(self) -> Loaded:
        if self.challenger is not None and random.random() < self.weight:
            return self.challenger
        return self.champion

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions answering now: the champion's, then the canary's."""
        return tuple(m.version for m in (self.champion, self.challenger) if m is not None)

    def served(self, version: str | None) -> Loaded:
        """`version` when it is one of those answering now (a URL that names it), else
        KeyError; None: the canary split picks."""
        if version is None:
            return self.pick()
        for m in (self.champion, self.challenger):
            if m is not None and m.version == version:
                return m
        raise KeyError(version)


def load_version(name: str, version: str) -> Loaded:
    """Fetch a registered version's mlrt files and load them (safetensors/skops/JSON only)."""
    from runtime.inference.predictor import Predictor
    from runtime.registry.model_dir import fetch_model

    model = fetch_model(f"models:/{name}/{version}")
    predictor = Predictor.from_files(model.files)
    return Loaded(name, str(version), predictor, Features.from_state(predictor.state),
                  dict(model.info.tags), model.info.run_id)


class VersionRouter:
    """Resolves the served URI (and the canary alias) to loaded versions; reuses loaded ones."""

    def __init__(self, args: AppArgs):
        from runtime.registry.uris import parse_model_uri

        self.name, self.version, self.alias = parse_model_uri(args.model_uri)
        self.canary = args.serve.canary
        self._cache: dict[str, Loaded] = {}

    def resolve(self) -> Routing:
        from runtime.registry import versions
        from runtime.registry.uris import resolve_version

        version = self.version
        if self.alias is not None:  # polled every second: no lookup when the URI is a version
            version = resolve_version(self.name, None, self.alias).version
        champion = self._get(str(version))
        challenger, weight = None, 0.0
        if self.canary is not None:
            info = versions.version_by_alias(self.name, self.canary.alias)
            if (info is not None and info.version != champion.version
                    and info.tags.get(ROLLED_BACK_TAG) != "true"):
                challenger, weight = self._get(info.version), self.canary.weight
        keep = {champion.version} | ({challenger.version} if challenger else set())
        self._cache = {v: m for v, m in self._cache.items() if v in keep}
        return Routing(champion, self.alias, challenger, weight)

    def _get(self, version: str) -> Loaded:
        if version not in self._cache:
            self._cache[version] = load_version(self.name, version)
        return self._cache[version]
