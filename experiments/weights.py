"""A trained model's weights as a compact JSON value, so they can live on the Optuna trial.

    trial.set_user_attr("weights", encode_weights(result.model))   # objective, once per trial
    model = model_of_trial(trial)                                  # the same model, rebuilt

The weights of a COMPLETE trial are part of its record like every other figure, so the MLflow
model of the best trial (`experiments.model_registry`) can be rebuilt from Optuna alone. A
softmax regression on MNIST is 7,850 float32 numbers: 31 KB, about 42 KB as base64.
"""

from __future__ import annotations

import base64

import numpy as np
import torch
from optuna.trial import FrozenTrial
from torch import nn

from softmaxreg.model import build_model

WEIGHTS_ATTR = "weights"
DTYPE = "float32"


def encode_weights(model: nn.Module) -> dict[str, object]:
    """{"dtype": "float32", "tensors": {name: {"shape": [...], "base64": "..."}}}, little-endian."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        array = tensor.detach().to("cpu", torch.float32).numpy().astype("<f4")
        tensors[name] = {
            "shape": list(array.shape),
            "base64": base64.b64encode(array.tobytes()).decode("ascii"),
        }
    return {"dtype": DTYPE, "tensors": tensors}


def decode_weights(encoded: dict[str, object]) -> dict[str, torch.Tensor]:
    """The state dict `encode_weights` stored."""
    if encoded.get("dtype") != DTYPE:
        raise ValueError(f"weights stored as {encoded.get('dtype')!r}, expected {DTYPE!r}")
    state = {}
    for name, tensor in dict(encoded["tensors"]).items():
        array = np.frombuffer(base64.b64decode(tensor["base64"]), dtype="<f4")
        state[name] = torch.from_numpy(array.reshape(tensor["shape"]).copy())
    return state


def model_of_trial(trial: FrozenTrial) -> nn.Module | None:
    """The trial's final model on the CPU in eval mode, or None if it stored no weights."""
    encoded = trial.user_attrs.get(WEIGHTS_ATTR)
    if not encoded:
        return None
    settings = trial.user_attrs.get("settings") or {}
    return model_from_weights(encoded, str(settings.get("model", "logits")))


def model_from_weights(encoded: dict[str, object], model_name: str) -> nn.Module:
    """A `model_name` model holding the `encode_weights` value `encoded`, on the CPU, in eval
    mode."""
    model = build_model(model_name, seed=0)
    model.load_state_dict(decode_weights(encoded))
    return model.eval()
