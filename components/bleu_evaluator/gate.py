"""The gate: does a model's BLEU earn it a blessing? A pure function, no TFX.

Called by the BleuEvaluator executor once the candidate (and the baseline, when there is
one) has been scored on the eval split. Two kinds of threshold, as in TFX's Evaluator:
  - absolute: `bleu_4 >= min_bleu_4` and `bleu_1 >= min_bleu_1`, and `cider >= min_cider`
    when `min_cider` is above 0 (the project's CIDEr-D; 0 turns that check off);
  - change: BLEU-4 may fall at most `max_bleu_4_drop` (absolute) below the latest blessed
    model's BLEU-4 on the same split. Without a blessed baseline only the minimums apply.
The reason names every failed threshold and by how much, or, for a pass, the numbers that
passed, so the log and the blessing artifact say why without anyone re-running anything.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Mapping

# Float noise must not turn "exactly at the threshold" into a failure.
_EPSILON = 1e-9


@dataclasses.dataclass(frozen=True)
class Thresholds:
    min_bleu_4: float
    min_bleu_1: float
    max_bleu_4_drop: float
    min_cider: float = 0.0


@dataclasses.dataclass(frozen=True)
class Decision:
    blessed: bool
    # One human sentence: every failed threshold with its shortfall, or why it passed.
    reason: str
    # The failed checks, one phrase each (empty when blessed).
    failures: tuple[str, ...] = ()


def decide(
    scores: Mapping[str, float],
    thresholds: Thresholds,
    baseline: Mapping[str, float] | None = None,
) -> Decision:
    """Bless the model with `scores` (bleu_1..4, cider) unless a threshold fails.

    `baseline` holds the scores of the latest blessed model on the same split, or None.
    """
    failures: list[str] = []
    passes: list[str] = []
    minimums = [("bleu_4", "min_bleu_4"), ("bleu_1", "min_bleu_1")]
    if thresholds.min_cider > 0:
        minimums.append(("cider", "min_cider"))
    for metric, minimum_name in minimums:
        value = scores.get(metric)
        minimum = getattr(thresholds, minimum_name)
        if not _is_number(value):
            failures.append(f"{metric} is {_describe(value)}, so it cannot meet {minimum_name}")
        elif value + _EPSILON < minimum:
            a, b, short = _fmt(value, minimum, minimum - value)
            failures.append(f"{metric} {a} < {minimum_name} {b} (short by {short})")
        else:
            a, b = _fmt(value, minimum)
            passes.append(f"{metric} {a} >= {minimum_name} {b}")

    if baseline is None:
        passes.append("no blessed baseline yet, so no regression check")
    else:
        value, before = scores.get("bleu_4"), baseline.get("bleu_4")
        tolerance = thresholds.max_bleu_4_drop
        if not _is_number(before):
            # A comparison that cannot be made must not pass as one that did.
            failures.append(f"the blessed baseline's bleu_4 is {_describe(before)}, so the regression check cannot be made")
        elif _is_number(value) and before - value > tolerance + _EPSILON:
            d, t, v, b = _fmt(before - value, tolerance, value, before)
            failures.append(f"bleu_4 {v} dropped {d} below the blessed baseline {b} (tolerance {t})")
        elif _is_number(value):
            change, t, b = _fmt(value - before, tolerance, before)
            sign = "+" if value >= before else ""
            passes.append(f"bleu_4 changed by {sign}{change} against the blessed baseline {b} (tolerance {t})")

    if failures:
        return Decision(False, "not blessed: " + "; ".join(failures), tuple(failures))
    return Decision(True, "blessed: " + "; ".join(passes))


def _is_number(value: object) -> bool:
    """A finite real number: NaN, infinity, None and strings cannot be compared to a threshold."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _describe(value: object) -> str:
    return "missing" if value is None else f"{value} (not a number)"


def _fmt(*values: float) -> tuple[str, ...]:
    """4 decimals, as metrics.json and the README give scores, so a near-miss reads as one."""
    return tuple(f"{v:.4f}" for v in values)
