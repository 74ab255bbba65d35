"""The MLflow pyfunc model: an ftpipe export directory behind MLflow's `predict` API.

The export directory travels as the model's artifact `export`, unchanged (for LoRA, the
adapter alone; see `ftpipe.registry.model_log`). Loading goes through
`ftpipe.train.predictor.Predictor`, so the three export kinds (transformers, peft,
pooled-classifier) all work and tokenize as in training. The model is logged "from code"
(`pyfunc_code.py`): MLflow stores that file, not a pickle, and nothing user-supplied is ever
unpickled.

Input: a DataFrame with a `text` column (and `text_pair` for pair models). Output: for a
classifier, `label` and one `prob_<label>` column per class; for an entity tagger, `entities`
(text, type, start, end, score per entity) and `tags` (one per word of the text); for a
causal LM, `generated`, the answer to each prompt (`text`), or for a model tuned on
conversations, to each `messages` list of role + content.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

EXPORT_ARTIFACT = "export"
"""Name of the artifact holding the export directory."""


class ExportModel(PythonModel):
    """Serve an ftpipe export."""

    def load_context(self, context) -> None:
        """Load the export from the model's artifacts."""
        from ftpipe.train.predictor import Predictor

        self.predictor = Predictor.load(context.artifacts[EXPORT_ARTIFACT])

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """What the model's task returns for each input row."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if params and params.get("batch_size"):
            self.predictor.batch_size = int(params["batch_size"])
        if "messages" in frame:  # a chat model's conversations
            conversations = [[dict(m) for m in cell] for cell in frame["messages"]]
            return self.predictor.predict([], words=conversations)
        texts = frame["text"].astype(str).tolist()
        pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame else None
        return self.predictor.predict(texts, pairs)
