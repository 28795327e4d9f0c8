"""The Ray cluster's token (token authentication stays on): read the way Ray's own loader
reads it, for the job server, `serve deploy` and the dashboard."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.errors import InputError


def auth_token() -> str | None:
    """The cluster token, looked up the way Ray's own loader does."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as e:
            raise InputError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the token file "
                             f"({e.strerror})") from e
    default = Path.home() / ".ray" / "auth_token"
    if not default.is_file():
        return None
    try:
        return default.read_text().strip() or None
    except OSError as e:
        raise InputError(f"{default}: cannot read the Ray token file ({e.strerror}); fix its "
                         "permissions or set RAY_AUTH_TOKEN") from e


def auth_headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}
