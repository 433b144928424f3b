"""Every metric against values computed by hand."""

import math

import pytest

from medzoo.metrics import (
    exact_match,
    iou,
    normalize,
    parse_box,
    parse_numbers,
    rouge_l,
    summarize_detection,
    summarize_measurements,
    token_f1,
)


def test_normalize_keeps_decimals_and_hyphens():
    assert normalize("  The Upper-Left quadrant. ") == "upper-left quadrant"
    assert normalize("12.5 mm!") == "12.5 mm"


def test_exact_match():
    assert exact_match("Yes.", "yes") == 1.0
    assert exact_match("a red polyp", "red polyp") == 1.0
    assert exact_match("no", "yes") == 0.0


def test_token_f1_hand_computed():
    # pred tokens: red, polyp, left ; ref tokens: red, polyp ; common 2 -> P 2/3, R 1 -> F1 0.8
    assert token_f1("red polyp left", "red polyp") == pytest.approx(0.8)
    assert token_f1("blue", "red") == 0.0
    assert token_f1("", "") == 1.0


def test_rouge_l_hand_computed():
    # LCS("polyp in upper left", "small polyp upper left") = polyp upper left = 3; P 3/4, R 3/4 -> 0.75
    assert rouge_l("polyp in upper left", "small polyp upper left") == pytest.approx(0.75)
    assert rouge_l("left upper", "upper left") == pytest.approx(0.5)


def test_number_and_box_parsing():
    assert parse_numbers("The distance is about 23.4 mm, not 3e1") == [23.4, 30.0]
    assert parse_numbers("no idea") == []
    assert parse_box("[0.12, 0.30, 0.55, 0.80]") == [0.12, 0.30, 0.55, 0.80]
    assert parse_box("box: 0.5 0.5") is None
    assert parse_box("[0.6, 0.3, 0.2, 0.8]") is None  # x2 < x1 is not a box


def test_iou_hand_computed():
    # overlap 0.5 x 0.5 = 0.25; union 1 + 1 - 0.25 = 1.75
    assert iou([0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5]) == pytest.approx(0.25 / 1.75)
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0


def test_measurements_count_failed_parses_as_failures():
    preds = ["10.0", "about 22 mm", "I cannot tell", "35"]
    refs = ["10.0", "20.0", "30.0", "50.0"]
    s = summarize_measurements(preds, refs)
    # abs errors: 0, 2, 30 (failure -> |ref|), 15 ; rel: 0, 0.1, 1.0 (failure), 0.3
    assert s["n"] == 4 and s["parse_rate"] == 0.75
    assert s["mae"] == pytest.approx((0 + 2 + 30 + 15) / 4)
    assert s["mre"] == pytest.approx((0 + 0.1 + 1.0 + 0.3) / 4)
    assert s["share_mre_lt_0.1"] == pytest.approx(1 / 4)  # 0.1 itself is not < 0.1
    assert s["share_mre_lt_0.2"] == pytest.approx(2 / 4)
    assert s["share_mre_lt_0.3"] == pytest.approx(2 / 4)
    assert s["parsed_only_mae"] == pytest.approx((0 + 2 + 15) / 3)
    assert s["parsed_only_mre"] == pytest.approx((0 + 0.1 + 0.3) / 3)


def test_lesion_axes_are_two_values_each():
    s = summarize_measurements(
        ["major axis: 11 mm, minor axis: 4 mm", "major axis: 20 mm"],
        ["major axis: 10.0 mm, minor axis: 5.0 mm", "major axis: 20.0 mm, minor axis: 8.0 mm"],
        n_values=2,
    )
    # values: (1 abs, 0.1 rel), (1, 0.2), (0, 0), minor missing -> (8, 1.0)
    assert s["n"] == 4 and s["parse_rate"] == 0.75
    assert s["mae"] == pytest.approx((1 + 1 + 0 + 8) / 4)
    assert s["mre"] == pytest.approx((0.1 + 0.2 + 0 + 1.0) / 4)


def test_detection_summary():
    preds = ["[0.0, 0.0, 1.0, 1.0]", "[0.5, 0.5, 1.5, 1.5]", "no box here"]
    refs = ["[0.0, 0.0, 1.0, 1.0]", "[0.0, 0.0, 1.0, 1.0]", "[0.2, 0.2, 0.4, 0.4]"]
    s = summarize_detection(preds, refs)
    assert s["n"] == 3 and s["parse_rate"] == pytest.approx(2 / 3)
    assert s["mean_iou"] == pytest.approx((1 + 0.25 / 1.75 + 0) / 3)
    assert s["acc_iou_0.5"] == pytest.approx(1 / 3)


def test_garbage_never_raises():
    for junk in ["", "nan", "inf mm", "[[[", "1e999", "−5"]:
        summarize_measurements([junk], ["12.0"])
        summarize_detection([junk], ["[0.1, 0.1, 0.2, 0.2]"])
        token_f1(junk, "x"), rouge_l(junk, "x"), exact_match(junk, "x")
    s = summarize_measurements(["1e999"], ["12.0"])
    assert s["parse_rate"] == 0.0 and math.isclose(s["mre"], 1.0)
