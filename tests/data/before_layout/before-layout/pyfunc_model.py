"""MLflow "model from code" entry point for mlrt models.

MLflow loads this file (copied into the model version) by running it, instead of unpickling a
Python object; the model itself is read from safetensors / skops / JSON by
`runtime.inference.Predictor`. So `mlflow.pyfunc.load_model("models:/NAME@champion")` works in
any MLflow-aware tool where mlrt is installed, and never unpickles code.
"""

import mlflow.models
import mlflow.pyfunc


class MlrtPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from runtime.inference import Predictor

        self.predictor = Predictor.load(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(
            model_input, columns=self.predictor.features)
        return self.predictor.predict_frame(frame)


mlflow.models.set_model(MlrtPyfunc())
