"""Model URIs: `models:/NAME@ALIAS` or `models:/NAME/VERSION`, parsed and resolved to the
registered version they point at now."""

from __future__ import annotations

import re

from runtime.errors import InputError, RegistryError
from runtime.registry import versions

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> (name, version, alias)."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise InputError(f"model URI: expected models:/NAME@ALIAS or models:/NAME/VERSION, "
                         f"got '{uri}'")
    return match["name"], match["version"], match["alias"]


def resolve_version(name: str, version: str | None, alias: str | None):
    """The registered version (runtime.versions.VersionInfo) that a URI's parts point at now;
    an unknown model, version or alias is a RegistryError naming it."""
    if alias is None:
        return versions.get_version(name, str(version))
    info = versions.version_by_alias(name, alias)
    if info is None:
        versions.list_versions(name)  # names an unknown model
        raise RegistryError(f"model '{name}' has no alias '{alias}'")
    return info
