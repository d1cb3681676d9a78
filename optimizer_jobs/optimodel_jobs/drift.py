"""Step: the drift reference profile the model server scores live traffic against (PSI).

Inputs: a sample with at most ``MAX_FEATURES`` elements gets one profile per element. Wider inputs
(images, token ids) get a bounded set: ``WIDE_SAMPLE`` evenly spaced elements plus the per-sample
mean, so the profile stays small and the server's per-request cost bounded. Output: predicted-class
frequencies for classifiers, quantile bins of the first output for regressors.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from optimodel_contracts.artifacts import DriftReference, FeatureProfile, class_profile, quantile_profile

MAX_FEATURES = 32
WIDE_SAMPLE = 16
BINS = 10


def input_profiles(inputs: Mapping[str, np.ndarray]) -> tuple[list[FeatureProfile], str]:
    profiles: list[FeatureProfile] = []
    notes = []
    for name, array in inputs.items():
        flat = np.asarray(array).reshape(len(array), -1)
        width = flat.shape[1]
        if width <= MAX_FEATURES:
            indices = list(range(width))
            notes.append(f"{name}: all {width} elements")
        else:
            indices = sorted({int(i) for i in np.linspace(0, width - 1, WIDE_SAMPLE)})
            notes.append(f"{name}: {len(indices)} of {width} elements (evenly spaced) + per-sample mean")
            profiles.append(quantile_profile(f"{name}.mean", flat.mean(axis=1), BINS, tensor=name, reduction="mean"))
        for index in indices:
            profiles.append(quantile_profile(f"{name}[{index}]", flat[:, index], BINS, tensor=name, flat_index=index))
    return profiles, "; ".join(notes)


def output_profile(outputs: np.ndarray, task: str) -> FeatureProfile:
    outputs = np.asarray(outputs)
    if task == "classification" and outputs.ndim == 2 and outputs.shape[1] > 1:
        return class_profile("output.class", np.argmax(outputs, axis=1), outputs.shape[1])
    return quantile_profile("output", outputs.reshape(len(outputs), -1)[:, 0], BINS)


def reference_profile(inputs: Mapping[str, np.ndarray], outputs: np.ndarray, task: str) -> DriftReference:
    profiles, reduction = input_profiles(inputs)
    return DriftReference(
        inputs=profiles,
        output=output_profile(outputs, task),
        sample_count=len(outputs),
        reduction=reduction,
    )
