"""The protocols a served mlrt model speaks besides its own /predict, as thin adapters over one
core: request bytes -> rows (serve_apps/validate.py checks every row the same way), the
model's (labels, probabilities) -> the protocol's answer. No web framework, no Ray: a route
reads the body, picks the version, runs the batcher and copies the Reply into its response.

    mlflow_scoring   MLflow's /invocations (+ /ping, /health, /version)
    oip              Open Inference Protocol v2 REST (/v2/...): tritonclient, KServe, MLServer
    kserve_v1        KServe v1 (/v1/models/{name}:predict)

Each adapter has `parse_*` (raises BadRequest), `*_reply` (-> Reply) and `error_reply`
(a BadRequest, the route's 401/413/503 included, in the protocol's error shape). Each module's
docstring lists where it deviates from its anchor and why.

    .venv/bin/python -m pytest tests/unit/serve_apps/test_protocols.py -q
"""

from serve_apps.protocols._common import ModelInfo, Reply

__all__ = ["ModelInfo", "Reply"]
