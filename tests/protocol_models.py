"""The served models the protocol adapters' unit tests describe (tests/unit/serve_apps/
test_protocols.py, test_oip.py): a numeric classifier, one with a categorical and an imputed
feature, a regressor; and the check that a call is refused with a status and a message."""

from __future__ import annotations

import numpy as np
import pytest

from serve_apps.protocols import ModelInfo
from serve_apps.validate import BadRequest, Features

NUMERIC = Features(("a", "b"), frozenset(), frozenset())
MIXED = Features(("x", "color"), frozenset({"color"}), frozenset({"x"}))
NUM_MODEL = ModelInfo("num", "3", NUMERIC, (0, 1))
MIX_MODEL = ModelInfo("mix", "7", MIXED, ("blue", "red"))
REGRESSOR = ModelInfo("reg", "1", NUMERIC, None)
LABELS, PROBA = np.array([1, 0]), np.array([[0.25, 0.75], [0.9, 0.1]])


def raises(status: int, fragment: str, fn, *args) -> BadRequest:
    with pytest.raises(BadRequest) as e:
        fn(*args)
    assert e.value.status == status, e.value.message
    assert fragment in e.value.message, e.value.message
    return e.value
