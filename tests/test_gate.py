"""The gate (components/bleu_evaluator/gate.py): absolute minimums, regression, the reasons."""

from __future__ import annotations

import pytest

from components.bleu_evaluator.gate import Thresholds, decide

THRESHOLDS = Thresholds(min_bleu_4=0.50, min_bleu_1=0.70, max_bleu_4_drop=0.02)


def scores(bleu_4: float, bleu_1: float = 0.9) -> dict[str, float]:
    return {"bleu_1": bleu_1, "bleu_2": 0.0, "bleu_3": 0.0, "bleu_4": bleu_4}


def test_a_good_model_without_baseline_is_blessed_and_the_reason_gives_the_numbers():
    decision = decide(scores(0.85, 0.95), THRESHOLDS)
    assert decision.blessed and decision.failures == ()
    assert decision.reason == (
        "blessed: bleu_4 0.8500 >= min_bleu_4 0.5000; bleu_1 0.9500 >= min_bleu_1 0.7000; "
        "no blessed baseline yet, so no regression check"
    )


def test_below_min_bleu_4_names_the_threshold_and_the_shortfall():
    decision = decide(scores(0.31), THRESHOLDS)
    assert not decision.blessed
    assert decision.failures == ("bleu_4 0.3100 < min_bleu_4 0.5000 (short by 0.1900)",)
    assert decision.reason == "not blessed: bleu_4 0.3100 < min_bleu_4 0.5000 (short by 0.1900)"


def test_every_failed_threshold_is_named():
    decision = decide(scores(0.10, 0.40), THRESHOLDS, baseline=scores(0.62))
    assert not decision.blessed
    assert decision.failures == (
        "bleu_4 0.1000 < min_bleu_4 0.5000 (short by 0.4000)",
        "bleu_1 0.4000 < min_bleu_1 0.7000 (short by 0.3000)",
        "bleu_4 0.1000 dropped 0.5200 below the blessed baseline 0.6200 (tolerance 0.0200)",
    )


def test_a_drop_beyond_the_tolerance_fails_even_above_the_minimums():
    decision = decide(scores(0.57), THRESHOLDS, baseline=scores(0.62))
    assert not decision.blessed
    assert decision.reason == "not blessed: bleu_4 0.5700 dropped 0.0500 below the blessed baseline 0.6200 (tolerance 0.0200)"


@pytest.mark.parametrize("bleu_4", [0.60, 0.61, 0.62, 0.70])
def test_a_drop_within_the_tolerance_or_a_gain_passes(bleu_4):
    decision = decide(scores(bleu_4), THRESHOLDS, baseline=scores(0.62))
    assert decision.blessed, decision.reason
    assert "against the blessed baseline 0.6200 (tolerance 0.0200)" in decision.reason


def test_exactly_at_the_thresholds_passes_despite_float_noise():
    # 0.62 - 0.60 is 0.020000000000000018 in floats.
    assert decide(scores(0.60, 0.70), THRESHOLDS, baseline=scores(0.62)).blessed
    assert decide(scores(0.50, 0.70), THRESHOLDS).blessed


def test_scores_read_with_four_decimals_so_close_values_stay_apart():
    # A BLEU-1 of 0.6155 must not read as a 0.62 target met.
    assert "bleu_1 0.6155 >= min_bleu_1 0.5800" in decide(scores(0.9, 0.6155), Thresholds(0.5, 0.58, 0.02)).reason
    decision = decide(scores(0.4996), THRESHOLDS)
    assert decision.failures == ("bleu_4 0.4996 < min_bleu_4 0.5000 (short by 0.0004)",)
    decision = decide(scores(0.8601), THRESHOLDS, baseline=scores(0.8802))
    assert decision.failures == ("bleu_4 0.8601 dropped 0.0201 below the blessed baseline 0.8802 (tolerance 0.0200)",)


def test_a_score_that_is_not_a_number_never_passes():
    decision = decide(scores(float("nan")), THRESHOLDS, baseline=scores(0.62))
    assert not decision.blessed
    assert "bleu_4 is nan" in decision.reason


def test_zero_thresholds_bless_anything_without_a_baseline():
    assert decide(scores(0.0, 0.0), Thresholds(0.0, 0.0, 0.0)).blessed


@pytest.mark.parametrize(
    ("dotted", "value"),
    [("gate.min_bleu_4", 1.5), ("gate.max_bleu_4_drop", -0.1), ("gate.signature", "sampling"), ("gate.batch_size", 0)],
)
def test_gate_config_rejects_bad_values_naming_the_key(dotted, value):
    from configs import ConfigError, load_config

    with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")):
        load_config("smoke", {dotted: value}, env={})


def test_every_profile_sets_thresholds_a_push_dir_and_the_smoke_one_is_strict_enough():
    from configs import available_profiles, load_config

    for profile in available_profiles():
        config = load_config(profile, env={})
        assert 0.0 < config.gate.min_bleu_4 <= config.gate.min_bleu_1
        assert config.push_dir.is_absolute()
    smoke = load_config("smoke", env={}).gate
    assert (smoke.min_bleu_4, smoke.min_bleu_1) == (0.5, 0.7)


def test_a_synthetic_profile_never_pushes_where_the_flickr8k_model_is_served():
    """`make demo` after `make pipeline` must not make `make serve-local` answer real photos
    with shape captions: the synthetic profiles push under model names of their own."""
    from configs import available_profiles, load_config
    from tracking.run_summary import DEFAULT_SERVING_BASE

    served = load_config("flickr8k_lite0", env={}).push_dir
    assert served == load_config("flickr8k_lite0", env={}).resolve(str(DEFAULT_SERVING_BASE))
    synthetic = [p for p in available_profiles() if p.startswith("smoke")]
    assert synthetic == ["smoke", "smoke_attention"]
    dirs = [load_config(p, env={}).push_dir for p in synthetic]
    assert served not in dirs and len(set(dirs)) == len(dirs)
    assert all(d.parent == served.parent for d in dirs)  # beside it, in TF Serving's models folder


def test_a_cider_minimum_fails_a_model_with_good_bleu_and_is_off_at_zero():
    good_bleu_low_cider = dict(scores(0.9, 0.95), cider=0.31)
    strict = Thresholds(0.5, 0.7, 0.02, min_cider=0.4)
    decision = decide(good_bleu_low_cider, strict)
    assert not decision.blessed
    assert decision.failures == ("cider 0.3100 < min_cider 0.4000 (short by 0.0900)",)
    assert decide(dict(good_bleu_low_cider, cider=0.4), strict).blessed
    assert decide(good_bleu_low_cider, Thresholds(0.5, 0.7, 0.02)).blessed
    assert "cider" not in decide(good_bleu_low_cider, Thresholds(0.5, 0.7, 0.02)).reason
    assert not decide(dict(scores(0.9, 0.95), cider=float("nan")), strict).blessed
