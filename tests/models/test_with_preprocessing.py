"""The preprocessing wrapper normalises each colour channel with its own mean and std."""

from __future__ import annotations

import copy

import numpy as np
import torch

from resnext_deploy.models.with_preprocessing import PreprocessAndClassify
from resnext_deploy.preprocess import resize_and_crop
from resnext_deploy.spec import ModelSpec
from tests.photos import colour_photos

# Far apart per channel: R, G and B each need their own numbers.
MEAN, STD = (0.2, 0.5, 0.8), (0.1, 0.3, 0.6)


def test_wrapper_equals_the_model_on_images_normalised_by_hand(tiny_model) -> None:  # noqa: ANN001
    model = copy.deepcopy(tiny_model).eval()
    spec = ModelSpec("tiny", 7, input_size=64, resize=73, mean=MEAN, std=STD)
    crops = np.stack([resize_and_crop(p, spec) for p in colour_photos().values()])
    by_hand = (crops.astype(np.float32) / 255 - np.float32(MEAN)) / np.float32(STD)
    with torch.inference_mode():
        expected = model(torch.from_numpy(by_hand.transpose(0, 3, 1, 2).copy()))
        logits, probs = PreprocessAndClassify(model, spec).eval()(torch.from_numpy(crops))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs, torch.softmax(expected, 1), rtol=1e-4, atol=1e-6)
