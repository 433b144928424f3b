"""The MedVision task metrics on 20 predictions per task, against errors worked out by hand.

Each row is (model output, reference, hand-computed error): absolute errors per value for the
measurement tasks (None = the value cannot be parsed, which counts as a failure: absolute error
|reference|, relative error 1), IoU for detection. The outputs are the kinds a VLM produces:
bare numbers, numbers inside sentences, units, scientific notation, refusals, empty strings,
missing values, swapped or inverted boxes. No relative error sits exactly on a 0.1 / 0.2 / 0.3
threshold, so the shares do not depend on float rounding. The summaries go through the same
path `medzoo bench` uses (score_example per record, then bench.summarize over the records).
"""

import pytest

DISTANCE = [  # reference 10.0 mm
    ("10.0", "10.0", 0.0),
    ("10.5", "10.0", 0.5),
    ("9.2 mm", "10.0", 0.8),
    ("11.5", "10.0", 1.5),
    ("8.2", "10.0", 1.8),
    ("12.5", "10.0", 2.5),
    ("The distance is 7.4 mm", "10.0", 2.6),
    ("15", "10.0", 5.0),
    ("I cannot measure this", "10.0", None),
    ("", "10.0", None),
    # reference 40.0 mm
    ("40", "40.0", 0.0),
    ("41.0", "40.0", 1.0),
    ("38", "40.0", 2.0),
    ("46", "40.0", 6.0),
    ("33", "40.0", 7.0),
    ("50", "40.0", 10.0),
    ("28.4", "40.0", 11.6),
    ("80.0 mm", "40.0", 40.0),
    ("4.0e1", "40.0", 0.0),
    ("about 37 millimetres", "40.0", 3.0),
]

ANGLE = [  # reference 90 degrees
    ("90", "90.0", 0.0),
    ("85.5", "90.0", 4.5),
    ("99.9", "90.0", 9.9),
    ("75", "90.0", 15.0),
    ("112.5", "90.0", 22.5),
    ("45 degrees", "90.0", 45.0),
    ("180", "90.0", 90.0),
    ("a right angle", "90.0", None),
    ("90°", "90.0", 0.0),
    ("The angle ABC is 93.6 degrees.", "90.0", 3.6),
    # reference 30 degrees
    ("30.0", "30.0", 0.0),
    ("31.5", "30.0", 1.5),
    ("27.3", "30.0", 2.7),
    ("34.5", "30.0", 4.5),
    ("24.6", "30.0", 5.4),
    ("37.2", "30.0", 7.2),
    ("21.6", "30.0", 8.4),
    ("60", "30.0", 30.0),
    ("obtuse", "30.0", None),
    ("-30", "30.0", 60.0),  # a sign is part of the number: 60 degrees off, not a perfect answer
]

L1 = "major axis: 20.0 mm, minor axis: 10.0 mm"
L2 = "major axis: 8.0 mm, minor axis: 5.0 mm"
LESION = [  # (major, minor) absolute errors, in the answer's order
    ("major axis: 20.0 mm, minor axis: 10.0 mm", L1, (0.0, 0.0)),
    ("major axis: 21.0 mm, minor axis: 9.5 mm", L1, (1.0, 0.5)),
    ("major axis: 23.0 mm, minor axis: 11.5 mm", L1, (3.0, 1.5)),
    ("major 25 mm, minor 12.5 mm", L1, (5.0, 2.5)),
    ("major axis: 20.0 mm", L1, (0.0, None)),
    ("none", L1, (None, None)),
    ("30 x 15 mm", L1, (10.0, 5.0)),
    ("major axis: 19.0 mm, minor axis: 18.0 mm", L1, (1.0, 8.0)),
    ("10.0 and 20.0", L1, (10.0, 10.0)),  # swapped: both values are wrong
    ("major axis: 20.4 mm, minor axis: 10.3 mm", L1, (0.4, 0.3)),
    ("major axis: 8.0 mm, minor axis: 5.0 mm", L2, (0.0, 0.0)),
    ("major axis: 8.4 mm, minor axis: 4.8 mm", L2, (0.4, 0.2)),
    ("major axis: 9.2 mm, minor axis: 5.6 mm", L2, (1.2, 0.6)),
    ("major axis: 6.0 mm, minor axis: 3.0 mm", L2, (2.0, 2.0)),
    ("major axis: 16.0 mm, minor axis: 10.0 mm", L2, (8.0, 5.0)),
    ("axes unknown", L2, (None, None)),
    ("major axis: 7.8 mm, minor axis: 5.1 mm", L2, (0.2, 0.1)),
    ("major axis: 8.0 mm", L2, (0.0, None)),
    ("8.7, 4.4", L2, (0.7, 0.6)),
    ("major axis: 10.0 mm, minor axis: 6.4 mm", L2, (2.0, 1.4)),
]

A = "[0.2, 0.2, 0.6, 0.6]"  # area 0.16
B = "[0.5, 0.1, 0.9, 0.3]"  # area 0.08
DETECTION = [  # IoU by hand: intersection / (area_pred + area_ref - intersection)
    ("[0.2, 0.2, 0.6, 0.6]", A, 1.0),
    ("The box is [0.20, 0.20, 0.60, 0.60].", A, 1.0),
    ("[0.4, 0.2, 0.8, 0.6]", A, 0.08 / 0.24),
    ("[0.2, 0.2, 0.4, 0.4]", A, 0.04 / 0.16),
    ("[0.1, 0.1, 0.7, 0.7]", A, 0.16 / 0.36),
    ("[0.7, 0.7, 0.9, 0.9]", A, 0.0),
    ("[0.6, 0.2, 0.2, 0.6]", A, None),  # x2 < x1: not a box
    ("[0.2, 0.2, 0.6]", A, None),  # three numbers
    ("no lesion", A, None),
    ("[0.25, 0.25, 0.6, 0.6]", A, 0.1225 / 0.16),
    ("[0.5, 0.1, 0.9, 0.3]", B, 1.0),
    ("[0.5, 0.1, 0.9, 0.25]", B, 0.06 / 0.08),
    ("[0.6, 0.1, 0.9, 0.3]", B, 0.06 / 0.08),
    ("[0.5, 0.05, 0.9, 0.4]", B, 0.08 / 0.14),
    ("[0.3, 0.1, 0.7, 0.3]", B, 0.04 / 0.12),
    ("[0.0, 0.0, 1.0, 1.0]", B, 0.08 / 1.0),
    ("[0.1, 0.5, 0.3, 0.9]", B, 0.0),
    ("x1: 0.5, y1: 0.1, x2: 0.9, y2: 0.3", B, 1.0),  # coordinate labels are not numbers
    ("[50, 10, 90, 30]", B, 0.0),  # pixel-scale box vs a normalised reference
    ("[0.5, 0.1, 0.9, 0.3]", B, 1.0),
]


def _hand_measurement_summary(rows, refs_of):
    """Means and shares from the hand-written errors, failures counted as |ref| and relative error 1."""
    abs_all, rel_all, abs_ok, rel_ok = [], [], [], []
    for _, ref, errs in rows:
        errs = errs if isinstance(errs, tuple) else (errs,)
        for err, r in zip(errs, refs_of(ref)):
            if err is None:
                abs_all.append(r)
                rel_all.append(1.0)
            else:
                abs_all += [err]
                rel_all += [err / r]
                abs_ok += [err]
                rel_ok += [err / r]
    return {
        "n": len(abs_all),
        "parse_rate": len(abs_ok) / len(abs_all),
        "mae": sum(abs_all) / len(abs_all),
        "mre": sum(rel_all) / len(rel_all),
        "share_mre_lt_0.1": sum(x < 0.1 for x in rel_all) / len(rel_all),
        "share_mre_lt_0.2": sum(x < 0.2 for x in rel_all) / len(rel_all),
        "share_mre_lt_0.3": sum(x < 0.3 for x in rel_all) / len(rel_all),
        "parsed_only_mae": sum(abs_ok) / len(abs_ok),
        "parsed_only_mre": sum(rel_ok) / len(rel_ok),
    }


def _summary(task, rows):
    from medzoo.bench import score_example, summarize

    records = []
    for i, (pred, ref, _) in enumerate(rows):
        _, m = score_example(task, pred, ref)
        m["bertscore_f1"] = 0.0
        records.append(
            {
                "id": str(i),
                "task": task,
                "category": task,
                "config": "tuned/none",
                "model": "tuned",
                "mode": "none",
                "prediction": pred,
                "reference": ref,
                "metrics": m,
            }
        )
    (entry,) = summarize(records, ["tuned/none"])["configs"]
    return entry["tasks"][task]


def test_fixture_has_twenty_predictions_per_task():
    assert [len(DISTANCE), len(ANGLE), len(LESION), len(DETECTION)] == [20, 20, 20, 20]


@pytest.mark.parametrize("task,rows", [("distance", DISTANCE), ("angle", ANGLE)], ids=["distance", "angle"])
def test_single_value_measurements(task, rows):
    got = _summary(task, rows)
    want = _hand_measurement_summary(rows, lambda ref: [float(ref)])
    assert got["n"] == want["n"] == 20
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_distance_totals_by_hand():
    # The same figures written out once, so a mistake in the helper above cannot hide one in medzoo.
    got = _summary("distance", DISTANCE)
    assert got["parse_rate"] == pytest.approx(18 / 20)
    # absolute: 0+.5+.8+1.5+1.8+2.5+2.6+5+10+10 = 34.7 ; 0+1+2+6+7+10+11.6+40+0+3 = 80.6
    assert got["mae"] == pytest.approx((34.7 + 80.6) / 20)
    # relative < 0.1: 0, .05, .08 | 0, .025, .05, 0, .075  -> 8 ; < 0.2 adds .15, .18 | .15, .175 -> 12
    # < 0.3 adds .25, .26 | .25, .29 -> 16
    assert (got["share_mre_lt_0.1"], got["share_mre_lt_0.2"], got["share_mre_lt_0.3"]) == pytest.approx(
        (0.40, 0.60, 0.80)
    )


def test_lesion_axes():
    got = _summary("lesion-size", LESION)
    want = _hand_measurement_summary(LESION, lambda ref: [float(ref.split()[2]), float(ref.split()[6])])
    # n counts examples; the parse rate counts values (two per answer): 6 of 40 missing
    assert got["n"] == 20 and got["parse_rate"] == pytest.approx(34 / 40)
    for key, value in want.items():
        if key == "n":
            continue
        assert got[key] == pytest.approx(value), key


def test_detection_iou():
    got = _summary("detection", DETECTION)
    ious = [iou or 0.0 for _, _, iou in DETECTION]
    assert got["n"] == 20
    assert (
        got["parse_rate"]
        == pytest.approx(sum(iou is not None for _, _, iou in DETECTION) / 20)
        == pytest.approx(17 / 20)
    )
    assert got["mean_iou"] == pytest.approx(sum(ious) / 20)
    # IoU >= 0.5: the five exact boxes, .765625, .75, .75, .571 -> 9
    assert got["acc_iou_0.5"] == pytest.approx(9 / 20)


def test_detection_per_example_iou():
    from medzoo.bench import score_example

    for pred, ref, iou in DETECTION:
        _, m = score_example("detection", pred, ref)
        assert m["iou"] == pytest.approx(iou or 0.0), pred
        assert m["parsed"] == (iou is not None), pred
