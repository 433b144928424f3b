"""Uncertainty for bench figures: 95% intervals, paired contrasts with corrected p-values, power.

Every figure is a mean of per-example observations (medzoo.bench.scoring.observations), so one
set of tools serves all metrics:

- Interval of a mean: Wilson's score interval (statsmodels) for a proportion when every example
  has its own image; otherwise a percentile bootstrap over *images* (several questions about one
  image are not independent evidence), resampling whole images and taking the ratio of sums so
  the estimate is exactly the reported figure (scipy.stats.bootstrap, paired over the images'
  sums and counts).
- Paired contrast (configuration B minus A on the same examples): the difference of means, a
  bootstrap interval over images, and a two-sided p-value: McNemar's exact test for right/wrong
  figures when images are not shared (statsmodels), otherwise a permutation test that swaps A and
  B within an image (scipy.stats.permutation_test, paired). p-values are Holm-corrected over every
  contrast reported together (statsmodels.stats.multitest).
- The smallest difference a contrast could detect at 80% power: the paired t-test's detectable
  effect size for that many images (statsmodels TTestPower), times the observed spread of the
  per-image differences.

Seeded: the same records give the same intervals and p-values.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Observations:
    """Per-example values of one figure (a measurement task has one value per axis) and the image
    each belongs to; the figure is their mean."""

    values: list[float]
    clusters: list[str]
    proportion: bool = False  # a share of right answers (each value 0 or 1), not a continuous score

    @property
    def binary(self) -> bool:
        return self.proportion and all(v in (0.0, 1.0) for v in self.values)


def _by_cluster(values, clusters):
    """(sums, counts) per cluster, in first-seen order."""
    import numpy as np

    index: dict[str, int] = {}
    for c in clusters:
        index.setdefault(c, len(index))
    ids = np.fromiter((index[c] for c in clusters), dtype=np.int64, count=len(clusters))
    sums = np.bincount(ids, weights=np.asarray(values, dtype=float), minlength=len(index))
    counts = np.bincount(ids, minlength=len(index)).astype(float)
    return sums, counts


def _ratio(sums, counts, axis=-1):
    return sums.sum(axis=axis) / counts.sum(axis=axis)


def _singletons(clusters) -> bool:
    return len(set(clusters)) == len(clusters)


def _bootstrap(sums, counts, seed: int) -> tuple[float | None, float | None]:
    import numpy as np
    from scipy.stats import bootstrap

    if len(sums) < 2:
        return None, None
    res = bootstrap(
        (sums, counts),
        _ratio,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def interval(obs: Observations, seed: int = SEED) -> dict:
    """The mean, its 95% interval and how it was computed."""
    n = len(obs.values)
    if not n:
        return {"value": None, "low": None, "high": None, "n": 0, "method": None}
    sums, counts = _by_cluster(obs.values, obs.clusters)
    value = float(_ratio(sums, counts))
    out = {"value": value, "n": n, "images": len(sums)}
    if obs.binary and _singletons(obs.clusters):
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(int(sum(obs.values)), n, alpha=1 - CONFIDENCE, method="wilson")
        return {**out, "low": float(low), "high": float(high), "method": "wilson"}
    low, high = _bootstrap(sums, counts, seed)
    return {**out, "low": low, "high": high, "method": "bootstrap over images" if low is not None else None}


def paired_contrast(a: Observations, b: Observations, seed: int = SEED) -> dict:
    """B - A on the same examples (in the same order): difference, 95% interval, p-value, and the
    smallest difference detectable at 80% power with this many images."""
    import numpy as np

    if len(a.values) != len(b.values) or a.clusters != b.clusters:
        raise ValueError("paired_contrast: A and B must hold the same examples in the same order")
    diff = [y - x for x, y in zip(a.values, b.values)]
    sums_d, counts = _by_cluster(diff, a.clusters)
    out = {"difference": float(_ratio(sums_d, counts)), "n": len(diff), "images": len(counts)}
    out["low"], out["high"] = _bootstrap(sums_d, counts, seed)
    if a.binary and b.binary and _singletons(a.clusters):
        from statsmodels.stats.contingency_tables import mcnemar

        pairs = list(zip(a.values, b.values))
        b_only = sum(1 for x, y in pairs if x == 0 and y == 1)
        a_only = sum(1 for x, y in pairs if x == 1 and y == 0)
        both = sum(1 for x, y in pairs if x == 1 and y == 1)
        table = [[both, a_only], [b_only, len(pairs) - both - a_only - b_only]]
        out.update(p=float(mcnemar(table, exact=True).pvalue), test="McNemar exact", discordant=a_only + b_only)
    else:
        out.update(p=_permutation_p(a, b, seed), test="paired permutation over images")
    # Per-image mean differences: their spread sets what this many images can detect.
    per_image = sums_d / counts
    sd = float(np.std(per_image, ddof=1)) if len(per_image) > 1 else 0.0
    out["detectable"] = detectable_difference(len(per_image), sd)
    return out


def _permutation_p(a: Observations, b: Observations, seed: int) -> float:
    import numpy as np
    from scipy.stats import permutation_test

    sums_a, counts = _by_cluster(a.values, a.clusters)
    sums_b, _ = _by_cluster(b.values, b.clusters)
    if np.allclose(sums_a, sums_b):
        return 1.0
    total = counts.sum()
    res = permutation_test(
        (sums_a, sums_b),
        lambda x, y, axis=-1: (y - x).sum(axis=axis) / total,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def detectable_difference(n_images: int, sd: float) -> float | None:
    """The smallest true mean difference a paired two-sided test at ALPHA finds with POWER."""
    if n_images < 3 or sd <= 0:
        return None
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(nobs=n_images, alpha=ALPHA, power=POWER, alternative="two-sided")
    return float(effect * sd)


def detectable_share(n_images: int) -> float | None:
    """The smallest difference in a share of right answers that a paired test on n examples finds
    with POWER at ALPHA in the most favourable case, every differing answer going one way (then
    the per-example difference d is 0 or 1 with mean delta, so its effect size is
    delta / sqrt(delta (1 - delta)); solved for delta)."""
    if n_images < 3:
        return None
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(nobs=n_images, alpha=ALPHA, power=POWER, alternative="two-sided")
    return float(effect**2 / (1 + effect**2))


def holm(contrasts: list[dict]) -> list[dict]:
    """Adds p_adjusted (Holm over all of them) and significant (p_adjusted < ALPHA) to each contrast."""
    if not contrasts:
        return contrasts
    from statsmodels.stats.multitest import multipletests

    reject, adjusted, _, _ = multipletests([c["p"] for c in contrasts], alpha=ALPHA, method="holm")
    for c, r, p in zip(contrasts, reject, adjusted):
        c["p_adjusted"], c["significant"] = float(p), bool(r)
    return contrasts
