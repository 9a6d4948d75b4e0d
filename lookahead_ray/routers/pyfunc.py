"""The MLflow pyfunc flavour of a router: the checkpoint folder rides along as an artifact.

`mlflow.pyfunc.load_model("models:/<name>/<version>").predict(pd.DataFrame({"prompt": [...]}))`
returns one column of scores per candidate.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class RouterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from lookahead_ray.routers.predictor import RouterPredictor  # heavy (torch): with the model, not the class

        self.predictor = RouterPredictor.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        prompts = list(model_input["prompt"])
        scores = self.predictor.score({"prompt": prompts}).numpy()
        return pd.DataFrame(scores, columns=self.predictor.candidates)
