"""Prechelt's GL, PQ and UP criteria reproduce values computed by hand from the paper's formulas.

Hand computation for the curve below (t = 1..10):

    E_va  2.0  1.6  1.5  1.56 1.5  1.65 1.8  1.62 1.95 2.1
    E_opt 2.0  1.6  1.5  1.5  1.5  1.5  1.5  1.5  1.5  1.5
    GL    0    0    0    4    0    10   20   8    30   40        GL = 100 * (E_va / E_opt - 1)
    E_tr  1.0  0.8  0.7  0.65 0.6  0.58 0.57 0.565 0.56 0.558

    P_5(5)  = 1000 * (3.75  / (5 * 0.6)   - 1) = 250
    P_5(10) = 1000 * (2.833 / (5 * 0.558) - 1) = 15.41218637992836
    PQ(5) = 0 / 250 = 0;  PQ(10) = 40 / 15.41218637992836 = 2.5953488372093
    UP, strip 2: strip ends 1.6, 1.56, 1.65, 1.62, 2.1 -> increases at t = 6 and t = 10 only
    UP, strip 1: increases at t = 4, 6, 7, 9, 10 -> two in a row first at t = 7
"""

from __future__ import annotations

import pytest

from highmark.criteria import GeneralizationLoss, ProgressQuotient, SuccessiveIncreases
from highmark.policy.prechelt import generalization_loss, training_progress

E_VA = [2.0, 1.6, 1.5, 1.56, 1.5, 1.65, 1.8, 1.62, 1.95, 2.1]
E_TR = [1.0, 0.8, 0.7, 0.65, 0.6, 0.58, 0.57, 0.565, 0.56, 0.558]
GL = [0.0, 0.0, 0.0, 4.0, 0.0, 10.0, 20.0, 8.0, 30.0, 40.0]


def rows() -> list[dict[str, float]]:
    return [{"val_loss": v, "train_loss": t} for v, t in zip(E_VA, E_TR, strict=True)]


def first_stop(criterion: object, data: list[dict[str, float]]) -> int | None:
    """The epoch t (1-based, as in the paper) after which the criterion stops."""
    for t, row in enumerate(data, start=1):
        if criterion.update(row):  # type: ignore[attr-defined]
            return t
    return None


def test_generalization_loss_values_match_the_hand_computation() -> None:
    gl = GeneralizationLoss(1000)
    seen = []
    for row in rows():
        gl.update(row)
        seen.append(gl.gl)
    assert seen == pytest.approx(GL)


@pytest.mark.parametrize(("alpha", "t"), [(5, 6), (15, 7), (35, 10), (41, None)])
def test_gl_alpha_stops_after_the_first_epoch_with_gl_above_alpha(alpha: float, t: int) -> None:
    assert first_stop(GeneralizationLoss(alpha), rows()) == t


def test_training_progress_matches_the_hand_computation() -> None:
    assert training_progress(E_TR[:5]) == pytest.approx(250.0)
    assert training_progress(E_TR[5:]) == pytest.approx(15.41218637992836)


def test_progress_quotient_is_evaluated_at_strip_ends_only() -> None:
    pq = ProgressQuotient(1000, strip=5)
    seen = []
    for row in rows():
        pq.update(row)
        seen.append(pq.pq)
    assert seen[:4] == [None] * 4
    assert seen[4] == 0.0
    assert seen[9] == pytest.approx(2.5953488372093)
    assert pq.pk == pytest.approx(15.41218637992836)


@pytest.mark.parametrize(("alpha", "t"), [(2, 10), (3, None)])
def test_pq_alpha_stops_at_the_first_strip_end_above_alpha(alpha: float, t: int) -> None:
    assert first_stop(ProgressQuotient(alpha, strip=5), rows()) == t


@pytest.mark.parametrize(("s", "strip", "t"), [(1, 2, 6), (2, 2, None), (2, 1, 7), (3, 1, None)])
def test_up_s_stops_after_s_successive_strip_increases(s: int, strip: int, t: int) -> None:
    assert first_stop(SuccessiveIncreases(s, strip=strip), rows()) == t


def test_up_is_reset_by_a_strip_without_increase() -> None:
    up = SuccessiveIncreases(2, strip=2)
    for row in rows()[:6]:
        up.update(row)
    assert up.increases == 1
    up.update(rows()[6])
    up.update(rows()[7])  # 1.62 < 1.65 at the strip end
    assert up.increases == 0


def test_gl_with_a_zero_minimum_is_infinite_once_the_error_rises() -> None:
    assert generalization_loss(0.0, 0.0) == 0.0
    assert generalization_loss(0.1, 0.0) == float("inf")


def test_training_progress_of_a_flat_strip_is_zero() -> None:
    assert training_progress([0.3, 0.3, 0.3]) == 0.0


def test_progress_quotient_needs_a_mapping_with_the_training_error() -> None:
    with pytest.raises(TypeError, match="train_loss"):
        ProgressQuotient(1).update(0.5)


def test_reasons_quote_the_criterion_values() -> None:
    gl = GeneralizationLoss(5)
    first_stop(gl, rows())
    assert "GL = 10 > 5" in str(gl.reason)
    pq = ProgressQuotient(2, strip=5)
    first_stop(pq, rows())
    assert "PQ = GL/P_5 = 40/15.41 = 2.595 > 2" in str(pq.reason)
    up = SuccessiveIncreases(2, strip=1)
    first_stop(up, rows())
    assert "2 successive strip ends" in str(up.reason)
