"""Bench uncertainty: intervals, paired contrasts and power checked against scipy / statsmodels on
fixed data, and the evidence the bench reports for synthetic pairs with known differences."""

import random

import numpy as np
import pytest

from medzoo.bench import stats
from medzoo.bench.evidence import evidence


def _obs(values, clusters=None):
    values = [float(v) for v in values]
    proportion = all(v in (0.0, 1.0) for v in values)
    return stats.Observations(values, clusters or [str(i) for i in range(len(values))], proportion)


def test_a_continuous_score_of_zeros_is_not_treated_as_a_proportion():
    iv = stats.interval(stats.Observations([0.0] * 12, [str(i) for i in range(12)], proportion=False))
    assert iv["method"] != "wilson" and iv["high"] == 0.0


def test_proportion_interval_is_wilson_from_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    iv = stats.interval(_obs([1] * 37 + [0] * 63))
    low, high = proportion_confint(37, 100, alpha=0.05, method="wilson")
    assert iv["method"] == "wilson" and iv["value"] == pytest.approx(0.37)
    assert (iv["low"], iv["high"]) == pytest.approx((low, high))


def test_continuous_interval_matches_scipy_bootstrap_and_covers_the_mean():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    values = rng.uniform(0, 1, 80)
    iv = stats.interval(_obs(values), seed=7)
    # One example per image: the ratio-of-sums bootstrap is scipy's bootstrap of the mean.
    ref = bootstrap(
        (values,), np.mean, n_resamples=stats.RESAMPLES, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    assert iv["value"] == pytest.approx(values.mean())
    assert iv["low"] < values.mean() < iv["high"]
    assert (iv["low"], iv["high"]) == pytest.approx((ref.low, ref.high), abs=0.01)
    assert stats.interval(_obs(values), seed=7) == iv, "seeded: a rerun gives the same interval"


def test_questions_sharing_an_image_widen_the_interval():
    # 20 images with 5 questions each, answered all right or all wrong per image: 20 independent
    # pieces of evidence, not 100, so the interval is far wider than Wilson's for 100 examples.
    values = [1.0] * 50 + [0.0] * 50
    clusters = [str(i // 5) for i in range(100)]
    shared = stats.interval(_obs(values, clusters))
    alone = stats.interval(_obs(values))
    assert shared["method"] == "bootstrap over images" and shared["images"] == 20
    assert shared["high"] - shared["low"] > 1.8 * (alone["high"] - alone["low"])


def _pair(n_diff, n=100, seed=0):
    """A right on 50 examples; B right on those and on n_diff more."""
    a = [1] * 50 + [0] * (n - 50)
    b = [1] * (50 + n_diff) + [0] * (n - 50 - n_diff)
    return _obs(a), _obs(b)


def test_mcnemar_matches_statsmodels_and_small_differences_are_not_significant():
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = _pair(3)
    c = stats.paired_contrast(a, b)
    assert c["test"] == "McNemar exact" and c["discordant"] == 3
    assert c["difference"] == pytest.approx(0.03)
    assert c["p"] == pytest.approx(mcnemar([[50, 0], [3, 47]], exact=True).pvalue)
    assert c["p"] > 0.05, "3 of 100 examples differing is not evidence"
    big = stats.paired_contrast(*_pair(40))
    assert big["p"] < 0.001 and big["low"] > 0.2


def test_permutation_test_for_continuous_figures_matches_scipy():
    from scipy.stats import permutation_test

    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 60)
    b = a + rng.normal(0.02, 0.2, 60)
    c = stats.paired_contrast(_obs(a), _obs(b), seed=5)
    ref = permutation_test(
        (a, b),
        lambda x, y, axis=-1: (y - x).mean(axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=stats.RESAMPLES,
        rng=np.random.default_rng(5),
    )
    assert c["test"] == "paired permutation over images"
    assert c["p"] == pytest.approx(ref.pvalue, abs=1e-9)
    assert c["difference"] == pytest.approx((b - a).mean())


def test_detectable_difference_is_statsmodels_power_times_spread():
    from statsmodels.stats.power import TTestPower

    d = stats.detectable_difference(100, 0.4)
    assert d == pytest.approx(0.4 * TTestPower().solve_power(nobs=100, alpha=0.05, power=0.8))
    assert stats.detectable_difference(400, 0.4) < d, "more examples detect smaller differences"
    assert stats.detectable_difference(100, 0.0) is None


def test_detectable_share_is_the_one_way_effect_size_solved_for_delta():
    from statsmodels.stats.power import TTestPower

    delta = stats.detectable_share(100)
    effect = TTestPower().solve_power(nobs=100, alpha=0.05, power=0.8)
    assert delta / np.sqrt(delta * (1 - delta)) == pytest.approx(effect)
    assert 0.05 < delta < 0.1 and stats.detectable_share(1000) < delta


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    ps = [0.01, 0.04, 0.03, 0.5]
    out = stats.holm([{"p": p} for p in ps])
    assert [c["p_adjusted"] for c in out] == pytest.approx(list(multipletests(ps, method="holm")[1]))
    assert [c["significant"] for c in out] == [True, False, False, False]


def _records(config, answers_right, task="vqa"):
    model, mode = config.split("/")
    out = []
    for i, right in enumerate(answers_right):
        pred = "yes" if right else "no"
        out.append(
            {
                "id": f"ex-{i}",
                "config": config,
                "model": model,
                "mode": mode,
                "task": task,
                "category": "presence",
                "reference": "yes",
                "prediction": pred,
                "image_key": f"img-{i}",
                "metrics": {"exact_match": float(right), "token_f1": float(right), "rouge_l": float(right),
                            "bertscore_f1": 0.8 + 0.2 * right},
            }
        )  # fmt: skip
    return out


def test_bench_evidence_says_which_differences_are_real():
    base = [1] * 50 + [0] * 50
    small = [1] * 53 + [0] * 47  # tuned differs from base on 3 of 100
    large = [1] * 90 + [0] * 10  # ... on 40 of 100
    records = _records("base/none", base) + _records("tuned/none", small) + _records("tuned/static", large)
    random.Random(0).shuffle(records)  # pairing is by example id, not position
    ev = evidence(records, ["base/none", "tuned/none", "tuned/static"])
    by = {(c["a"], c["b"]): c for c in ev["contrasts"]}
    assert not by[("base/none", "tuned/none")]["significant"]
    assert by[("tuned/none", "tuned/static")]["significant"]
    assert by[("tuned/none", "tuned/static")]["difference"] == pytest.approx(0.37)
    iv = ev["intervals"]["tuned/static"]["all"]["exact_match"]
    assert iv["value"] == pytest.approx(0.9) and iv["low"] < 0.9 < iv["high"]
    assert ev["intervals"]["base/none"]["vqa:presence"]["accuracy"]["value"] == pytest.approx(0.5)
    assert evidence(records, ["base/none", "tuned/none", "tuned/static"]) == ev, "seeded"


@pytest.mark.parametrize(
    "task,preds,ref",
    [
        ("lesion-size", ["major axis: 10 mm, minor axis: 5 mm", "12.5", "no idea", "4 and 9"], "major axis: 11.0 mm, minor axis: 5.0 mm"),
        ("distance", ["23.1", "about 30 mm", "", "20"], "25.0"),
        ("detection", ["[0.1, 0.1, 0.5, 0.5]", "[0.3, 0.3, 0.9, 0.9]", "a box", "[0.2, 0.2, 0.4, 0.6]"], "[0.10, 0.10, 0.50, 0.60]"),
    ],
)  # fmt: skip
def test_observations_average_to_the_summary_figures(task, preds, ref):
    """Intervals are computed on observations: their means must be the very figures the tables show."""
    from medzoo import metrics
    from medzoo.bench.scoring import MEASUREMENT_VALUES, observations, score_example

    obs: dict = {}
    for p in preds:
        for k, v in observations(task, score_example(task, p, ref)[1], ref).items():
            obs.setdefault(k, []).extend(v)
    refs = [ref] * len(preds)
    if task in MEASUREMENT_VALUES:
        summary = metrics.summarize_measurements(preds, refs, MEASUREMENT_VALUES[task])
    else:
        summary = metrics.summarize_detection(preds, refs)
    assert obs and all(np.mean(v) == pytest.approx(summary[k]) for k, v in obs.items())
    assert all(k in metrics.DEFINITIONS for k in obs), "every figure carries its definition"
