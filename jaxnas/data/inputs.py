"""What a raw input goes through before a network: recorded with every retrain and export, so a
loaded export can be fed the data as it comes (``jaxnas.export.input_transform``)."""
from __future__ import annotations

import numpy as np


def input_info(data) -> dict:
    """Tabular standardisation, image scaling, or (language models) the vocabulary of the token ids."""
    if hasattr(data, "feature_mean"):
        return {"kind": "tabular", "feature_mean": np.asarray(data.feature_mean, float).tolist(),
                "feature_std": np.asarray(data.feature_std, float).tolist(),
                "feature_names": list(data.feature_names), "class_names": list(data.class_names),
                "transform": "(x - feature_mean) / feature_std"}
    if hasattr(data, "corpus"):
        return {"kind": "tokens", "vocab_size": int(data.vocab_size), "vocab": list(data.corpus.vocab),
                "transform": "word -> its index in vocab (int32 [time, streams])"}
    return {"kind": "image", "shape": list(data.x_train.shape[1:]), "mean": list(data.mean),
            "std": list(data.std), "class_names": list(getattr(data, "class_names", ()) or ()),
            "transform": "(uint8 / 255 - mean) / std, NHWC"}
