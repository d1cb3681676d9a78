"""Drift maths shared by the optimizer and the server: binning and PSI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optimodel_contracts.artifacts import (
    DriftReference,
    FeatureProfile,
    bin_counts,
    class_profile,
    extract_feature,
    population_stability_index,
    quantile_profile,
)


def test_bin_counts_boundaries_go_up() -> None:
    counts = bin_counts(np.array([-5.0, 0.0, 0.5, 1.0, 9.0, np.nan, np.inf]), [0.0, 1.0])
    # bin0: v < 0 ; bin1: 0 <= v < 1 ; bin2: v >= 1 (NaN dropped, +inf in the top bin)
    assert counts.tolist() == [1, 2, 3]


def test_psi_matches_hand_computation() -> None:
    reference = [0.25, 0.25, 0.5]
    observed = [10, 30, 60]
    expected = sum((o - r) * math.log(o / r) for r, o in zip(reference, [0.1, 0.3, 0.6], strict=True))
    assert population_stability_index(reference, observed) == pytest.approx(expected, rel=1e-12)


def test_psi_zero_for_identical_and_floored_for_empty_bins() -> None:
    assert population_stability_index([0.2, 0.8], [20, 80]) == pytest.approx(0.0, abs=1e-12)
    # An empty observed bin must give a large but finite PSI, thanks to eps.
    psi = population_stability_index([0.5, 0.5], [100, 0], eps=1e-4)
    expected = (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert psi == pytest.approx(expected, rel=1e-9)
    assert math.isfinite(psi)


def test_psi_refuses_no_data_and_mismatched_bins() -> None:
    with pytest.raises(ValueError, match="no observations"):
        population_stability_index([0.5, 0.5], [0, 0])
    with pytest.raises(ValueError, match="bins"):
        population_stability_index([0.5, 0.5], [1, 2, 3])


def test_quantile_profile_detects_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=20000)
    profile = quantile_profile("x", reference, bins=10)
    assert len(profile.edges) == 9
    assert np.allclose(profile.reference, 0.1, atol=0.01)
    same = population_stability_index(profile.reference, bin_counts(rng.normal(size=5000), profile.edges))
    shifted = population_stability_index(profile.reference, bin_counts(rng.normal(1.0, size=5000), profile.edges))
    assert same < 0.02
    assert shifted > 0.25  # the usual "significant shift" threshold


def test_constant_feature_gets_a_bin_around_its_value() -> None:
    profile = quantile_profile("c", np.zeros(100))
    assert profile.edges == [-0.5, 0.5]
    assert profile.reference == [0.0, 1.0, 0.0]
    assert population_stability_index(profile.reference, bin_counts(np.ones(50), profile.edges)) > 1.0


def test_class_profile_edges_and_frequencies() -> None:
    profile = class_profile("output", np.array([0, 1, 1, 2, 2, 2]), num_classes=4)
    assert profile.edges == [0.5, 1.5, 2.5]
    assert profile.reference == pytest.approx([1 / 6, 2 / 6, 3 / 6, 0.0])


def test_profile_validation() -> None:
    with pytest.raises(ValueError, match="len\\(edges\\)\\+1"):
        FeatureProfile(name="x", edges=[0.0], reference=[1.0])
    with pytest.raises(ValueError, match="sum"):
        FeatureProfile(name="x", edges=[0.0], reference=[0.3, 0.3])
    with pytest.raises(ValueError, match="increasing"):
        FeatureProfile(name="x", edges=[1.0, 0.0], reference=[0.3, 0.3, 0.4])


def test_extract_feature_value_and_mean() -> None:
    batch = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    value = FeatureProfile(name="x[5]", edges=[0.0], reference=[0.0, 1.0], tensor="x", flat_index=5)
    mean = FeatureProfile(name="x.mean", edges=[0.0], reference=[0.0, 1.0], tensor="x", reduction="mean")
    assert extract_feature(batch, value).tolist() == [5.0, 17.0]
    assert extract_feature(batch, mean).tolist() == pytest.approx([5.5, 17.5])
    reference = DriftReference(inputs=[value, mean], output=class_profile("y", np.array([0, 1]), 2))
    assert DriftReference.model_validate_json(reference.model_dump_json()) == reference
