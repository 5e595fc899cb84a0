"""The MLflow pyfunc that wraps a fine-tuned model dir: what `register` logs and the service loads."""

from __future__ import annotations

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from bayes_beats.model.plans import DEFAULT_TEMPERATURE
from bayes_beats.music.audio import wav_bytes


class BayesBeatsModel(PythonModel):
    """prompts → WAV bytes + what was rendered (bpm, keyscale, energy)."""

    def load_context(self, context) -> None:
        from bayes_beats.model.generate import load_generator

        self.generator = load_generator(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        temperature = float((params or {}).get("temperature", DEFAULT_TEMPERATURE))
        rows = []
        for row in model_input.itertuples():
            audio, plans = self.generator.generate_with_plans(
                [row.prompt], float(row.duration_s), int(row.seed), temperature=temperature
            )
            sr = self.generator.sample_rate
            rows.append({"wav": wav_bytes(audio[0][0], sr), "sample_rate": sr, **plans[0]})
        return pd.DataFrame(rows)


SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("double", "duration_s"), ColSpec("long", "seed")]),
    outputs=Schema(
        [
            ColSpec("binary", "wav"),
            ColSpec("long", "sample_rate"),
            ColSpec("double", "bpm"),
            ColSpec("string", "keyscale"),
            ColSpec("double", "energy"),
        ]
    ),
    params=ParamSchema([ParamSpec("temperature", "double", DEFAULT_TEMPERATURE)]),
)
