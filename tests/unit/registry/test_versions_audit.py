"""Unit: alias moves are audited where they happen (registry.versions), write-ahead: no Ray, a
real MLflow sqlite registry with versions created directly, real audit files."""

from __future__ import annotations

import mlflow
import pytest

from runtime.errors import AuditError, InputError
from runtime.governance import audit
from runtime.registry import tracking, versions

M = "va"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> str:
    """One sqlite store for the module (creating its tables is the slow part)."""
    return str(tmp_path_factory.mktemp("versions-audit") / "store")


@pytest.fixture
def storage(shared, tmp_path, monkeypatch) -> str:
    """A fresh registered model `M` with two versions, and a fresh audit folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # use_store sets it; restored afterwards
    tracking.use_store(shared)
    client = mlflow.MlflowClient()
    if client.search_registered_models(f"name='{M}'"):
        client.delete_registered_model(M)
    client.create_registered_model(M)
    for _ in range(2):
        client.create_model_version(M, source=(tmp_path / "model").as_uri())
    return str(tmp_path)  # the audit trail under tmp_path/audit/


def _champion() -> str | None:
    info = versions.version_by_alias(M, "champion")
    return info.version if info else None


def test_every_move_and_rollback_is_an_event_with_from_and_to(storage):
    versions.move_alias(M, "champion", "1", audit.Note(storage, "ci"))
    versions.move_alias(M, "champion", "2", audit.Note(storage, "ann", "better",
                                                       audit.PROMOTED))
    assert versions.rollback(M, "champion", audit.Note(storage, "bob", "worse")) == ("2", "1")
    events = audit.load_trail(storage, M).events
    assert [(e.kind, e.actor, e.data["from"], e.data["to"]) for e in events] == [
        ("alias_moved", "ci", None, "1"), ("promoted", "ann", "1", "2"),
        ("rolled_back", "bob", "2", "1")]
    assert audit.aliases_at(events) == {"champion": _champion()} == {"champion": "1"}


def test_an_event_that_cannot_be_written_leaves_the_alias_where_it_was(storage, tmp_path):
    versions.move_alias(M, "champion", "1", audit.Note(storage, "ci"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "audit").write_text("not a folder")
    with pytest.raises(AuditError, match="audit: cannot"):
        versions.move_alias(M, "champion", "2", audit.Note(str(broken), "ann", "x",
                                                           audit.PROMOTED))
    assert _champion() == "1"  # write-ahead: no event, no move


def test_decisions_without_a_reason_move_nothing(storage):
    versions.move_alias(M, "champion", "2", audit.Note(storage, "ci"))
    versions.move_alias(M, "champion", "1", audit.Note(storage, "ci"))
    with pytest.raises(InputError, match="--reason: required"):
        versions.move_alias(M, "champion", "2", audit.Note(storage, "ann", None,
                                                           audit.PROMOTED))
    with pytest.raises(InputError, match="--reason: required"):
        versions.rollback(M, "champion", audit.Note(storage, "ann"))
    assert _champion() == "1" and len(audit.load_trail(storage, M).events) == 2


def test_a_move_is_audited_as_a_move(storage):
    with pytest.raises(ValueError, match="not 'served'"):
        versions.move_alias(M, "champion", "1", audit.Note(storage, "ci", None, audit.SERVED))
    assert _champion() is None
