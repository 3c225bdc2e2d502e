"""The gate never blesses on a comparison it could not make: NaN or missing scores."""

from __future__ import annotations

import pytest

from components.bleu_evaluator.gate import Thresholds, decide

THRESHOLDS = Thresholds(min_bleu_4=0.50, min_bleu_1=0.70, max_bleu_4_drop=0.02)
GOOD = {"bleu_1": 0.9, "bleu_2": 0.8, "bleu_3": 0.7, "bleu_4": 0.6}
NAN = float("nan")


@pytest.mark.parametrize("before", [NAN, float("inf"), None])
def test_a_baseline_that_is_not_a_number_is_never_blessed(before):
    baseline = dict(GOOD, bleu_4=before)
    decision = decide(GOOD, THRESHOLDS, baseline=baseline)
    assert not decision.blessed
    expected = "missing" if before is None else f"{before} (not a number)"
    assert decision.failures == (
        f"the blessed baseline's bleu_4 is {expected}, so the regression check cannot be made",
    )
    assert decision.reason == "not blessed: " + decision.failures[0]


def test_a_baseline_without_bleu_4_is_never_blessed():
    decision = decide(GOOD, THRESHOLDS, baseline={"bleu_1": 0.9})
    assert not decision.blessed
    assert decision.failures == ("the blessed baseline's bleu_4 is missing, so the regression check cannot be made",)


def test_nan_against_nan_is_not_blessed():
    nan_scores = dict(GOOD, bleu_4=NAN)
    decision = decide(nan_scores, THRESHOLDS, baseline=nan_scores)
    assert not decision.blessed
    assert decision.failures == (
        "bleu_4 is nan (not a number), so it cannot meet min_bleu_4",
        "the blessed baseline's bleu_4 is nan (not a number), so the regression check cannot be made",
    )
    assert decision.reason == (
        "not blessed: bleu_4 is nan (not a number), so it cannot meet min_bleu_4; "
        "the blessed baseline's bleu_4 is nan (not a number), so the regression check cannot be made"
    )


@pytest.mark.parametrize("metric", ["bleu_4", "bleu_1"])
def test_a_missing_candidate_score_is_not_blessed(metric):
    scores = {k: v for k, v in GOOD.items() if k != metric}
    decision = decide(scores, Thresholds(0.0, 0.0, 0.0))
    assert not decision.blessed
    assert decision.failures == (f"{metric} is missing, so it cannot meet min_{metric}",)


@pytest.mark.parametrize("metric", ["bleu_4", "bleu_1"])
def test_a_nan_candidate_score_fails_even_at_zero_thresholds(metric):
    decision = decide(dict(GOOD, **{metric: NAN}), Thresholds(0.0, 0.0, 0.0), baseline=GOOD)
    assert not decision.blessed
    assert decision.failures == (f"{metric} is nan (not a number), so it cannot meet min_{metric}",)


def test_a_nan_candidate_with_a_good_baseline_names_only_the_nan():
    decision = decide(dict(GOOD, bleu_4=NAN), THRESHOLDS, baseline=GOOD)
    assert decision.failures == ("bleu_4 is nan (not a number), so it cannot meet min_bleu_4",)


def test_exactly_the_tolerance_below_the_baseline_passes_and_a_hair_more_fails():
    # Values that are exact in binary floats, so the boundary itself is tested.
    thresholds = Thresholds(0.0, 0.0, 0.25)
    at = decide(dict(GOOD, bleu_4=0.5), thresholds, baseline=dict(GOOD, bleu_4=0.75))
    assert at.blessed
    assert at.reason == (
        "blessed: bleu_4 0.5000 >= min_bleu_4 0.0000; bleu_1 0.9000 >= min_bleu_1 0.0000; "
        "bleu_4 changed by -0.2500 against the blessed baseline 0.7500 (tolerance 0.2500)"
    )
    assert not decide(dict(GOOD, bleu_4=0.5 - 1e-6), thresholds, baseline=dict(GOOD, bleu_4=0.75)).blessed
    gain = decide(dict(GOOD, bleu_4=0.75), thresholds, baseline=dict(GOOD, bleu_4=0.5))
    assert "bleu_4 changed by +0.2500 against the blessed baseline 0.5000" in gain.reason
    same = decide(dict(GOOD, bleu_4=0.5), thresholds, baseline=dict(GOOD, bleu_4=0.5))
    assert "bleu_4 changed by +0.0000" in same.reason


def test_just_below_a_minimum_fails_beyond_the_float_noise_allowance():
    assert not decide(dict(GOOD, bleu_4=0.5 - 1e-6), THRESHOLDS).blessed
    assert not decide(dict(GOOD, bleu_1=0.7 - 1e-6), THRESHOLDS).blessed
    assert decide(dict(GOOD, bleu_1=0.7 - 1e-10), THRESHOLDS).blessed


def test_thresholds_and_decisions_are_immutable_values():
    import dataclasses

    decision = decide(GOOD, THRESHOLDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.blessed = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        THRESHOLDS.min_bleu_4 = 0.0
