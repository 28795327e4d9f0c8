"""The peer a user would write instead of `mlrt serve`: one FastAPI + uvicorn process holding
the same registered model, answering mlrt's `{"instances": [...]}` body on POST /predict.

    .venv/bin/python benchmarks/fastapi_peer.py STORAGE MODEL_NAME PORT

Started by benchmarks/serve_load.py (not meant to be run by hand). It is given every
advantage a hand-written server has: no validation beyond pydantic's list-of-floats, no
request ids, no metrics, no batching, an `async def` route (no thread-pool handoff), and the
model's own numeric fast path (`Predictor.predict_rows`, the code mlrt's replicas call).
"""

import sys
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Body(BaseModel):  # module level and no postponed annotations: FastAPI must see the type
    instances: list[list[float]]


def build_app(storage: str, name: str):
    import numpy as np
    from fastapi import FastAPI

    from runtime.inference.predictor import Predictor
    from runtime.registry import tracking
    from runtime.registry.model_dir import fetch_model

    tracking.use_store(storage)
    files = fetch_model(f"models:/{name}@champion")
    predictor = Predictor.from_files(files.files)
    classes = predictor.classes

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(body: Body) -> dict:
        labels, proba = predictor.predict_rows(np.asarray(body.instances, dtype=np.float64))
        return {"predictions": labels.tolist(), "classes": classes,
                "probabilities": None if proba is None else proba.tolist(),
                "model_version": files.version}

    return app


def main() -> None:
    import uvicorn

    storage, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(build_app(storage, name), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
