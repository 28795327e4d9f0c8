"""MLflow "model from code" entry point for mlrt models.

MLflow loads this file (copied into the model version) by running it, instead of unpickling a
Python object; the model itself is read from safetensors / skops / JSON by
`runtime.inference.Predictor`. So `mlflow.pyfunc.load_model("models:/NAME@champion")` works in
any MLflow-aware tool where mlrt is installed, and never unpickles code.
"""

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class MlrtPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from runtime.inference import Predictor

        self.predictor = Predictor.load(context.artifacts["model_dir"])

    # The hint is a DataFrame, a type MLflow infers no schema from: it checks inputs against the
    # version's signature as before, and does not ask for type hints on every load.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(
            model_input, columns=self.predictor.features)
        return self.predictor.predict_frame(frame)


mlflow.models.set_model(MlrtPyfunc())
