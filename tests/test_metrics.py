import json

import numpy as np
import pytest
from scipy import stats

from aceuq import metrics


def test_error_definitions():
    pred = np.array([[1.0, 0, 0], [0, 0, 0]])
    ref = np.array([[0.0, 0, 0], [0, 3, 4]])
    assert np.allclose(metrics.force_error_norms(pred, ref), [1.0, 5.0])
    assert np.allclose(metrics.energy_errors_per_atom([1.0, -2.0], [0.0, 2.0], [2, 4]), [0.5, 1.0])
    assert np.allclose(metrics.max_per_structure([1, 5, 2, 3], [0, 0, 1, 1]), [5, 3])
    with pytest.raises(ValueError):
        metrics.force_error_norms(np.zeros((2, 3)), np.zeros((3, 3)))


def test_correlations_agree_with_scipy(rng):
    u = rng.lognormal(size=500)
    e = u * rng.lognormal(sigma=0.7, size=500)
    assert metrics.spearman(u, e) == pytest.approx(stats.spearmanr(u, e).statistic, abs=1e-14)
    assert metrics.pearson(u, e) == pytest.approx(stats.pearsonr(u, e).statistic, abs=1e-14)
    assert metrics.pearson(u, e, log=True) == pytest.approx(stats.pearsonr(np.log(u), np.log(e)).statistic, abs=1e-14)
    # known exact values: monotone -> 1, reversed -> -1, constant -> nan
    x = np.arange(10.0)
    assert metrics.spearman(x, x ** 3) == pytest.approx(1.0)
    assert metrics.spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(metrics.spearman(x, np.ones(10)))
    # pairs with a NaN are dropped; an infinite γ ranks at the end, as scipy ranks it
    assert metrics.spearman(np.r_[x, np.nan], np.r_[x, 1.0]) == pytest.approx(1.0)
    u = np.array([1.0, 2.0, np.inf, 4.0])
    assert metrics.spearman(u, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(stats.spearmanr(u, [1, 2, 3, 4]).statistic)
    assert metrics.spearman(u, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.8)


def test_calibration_floor_ignores_atoms_with_vanishing_sigma(rng):
    # a calibrated sample (σ scaled by 1/7: factor 7) plus atoms whose forces vanish by symmetry:
    # σ at rounding level, "error" at the reference precision
    sigma = rng.uniform(0.05, 0.5, 3000)
    err = np.linalg.norm(rng.normal(size=(3000, 3)) * sigma[:, None], axis=1)
    raw = sigma / 7.0
    assert metrics.calibration_factor(err, raw, dof=3) == pytest.approx(7.0, rel=0.05)
    assert metrics.calibration_factor(err, raw, dof=3, floor=1e-4) == pytest.approx(7.0, rel=0.05)
    e_sym, s_sym = np.full(300, 6e-8), np.full(300, 1e-10)
    e_all, s_all = np.r_[err, e_sym], np.r_[raw, s_sym]
    assert metrics.calibration_factor(e_all, s_all, dof=3) > 50          # the scalar factor is set by them
    a = metrics.calibration_factor(e_all, s_all, dof=3, floor=1e-4)
    assert a == pytest.approx(7.0 * np.sqrt(3000 / 3300), rel=0.06)     # RMS = 1 over all atoms
    z = metrics.z_rms(e_all, np.sqrt((a * s_all) ** 2 + 1e-8), dof=3)
    assert z == pytest.approx(1.0, abs=1e-6)
    assert metrics.calibration_factor(np.full(5, 1e-6), np.ones(5), dof=3, floor=1.0) == 0.0
    for floor in (0.0, 1e-4):  # nothing a scale could act on: one clear error
        with pytest.raises(ValueError, match="no positive sigma"):
            metrics.calibration_factor(err, np.zeros_like(err), dof=3, floor=floor)
    # floor -> 0 is the scalar factor
    assert metrics.calibration_factor(err, raw, dof=3, floor=1e-12) == pytest.approx(
        metrics.calibration_factor(err, raw, dof=3), rel=1e-6)


def test_perfect_calibration_has_near_zero_area(rng):
    for dof in (1, 3):
        sigma = rng.lognormal(mean=-2, sigma=1.0, size=20000)
        err = np.linalg.norm(sigma[:, None] * rng.normal(size=(sigma.size, dof)), axis=1)
        area = metrics.miscalibration_area(err, sigma, dof=dof)
        assert area < 0.01, (dof, area)
        assert metrics.z_rms(err, sigma, dof) == pytest.approx(1.0, abs=0.03)
        assert metrics.calibration_factor(err, sigma, dof) == pytest.approx(1.0, abs=0.03)
        # shuffled sigmas keep the marginal distribution but lose calibration
        shuffled = rng.permutation(sigma)
        assert metrics.miscalibration_area(err, shuffled, dof=dof) > 0.08
        # over-confident (σ/3) and under-confident (3σ) models are far off, in opposite directions
        _, obs_small = metrics.calibration_curve(err, sigma / 3, dof)
        _, obs_big = metrics.calibration_curve(err, sigma * 3, dof)
        exp, obs = metrics.calibration_curve(err, sigma, dof)
        assert np.all(obs_small <= obs + 1e-12) and np.all(obs_big >= obs - 1e-12)
        assert metrics.miscalibration_area(err, sigma / 3, dof) > 0.2


def test_miscalibration_area_known_case():
    # every error 0: observed proportion is 1 at every level -> area = ∫(1-p)dp = 0.5
    area = metrics.miscalibration_area(np.zeros(100), np.ones(100), n_levels=999)
    assert area == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError):
        metrics.miscalibration_area([1.0], [0.0])


def test_calibration_factor_rescales(rng):
    sigma = rng.lognormal(size=5000)
    err = np.abs(2.5 * sigma * rng.normal(size=5000))
    s = metrics.calibration_factor(err, sigma)
    assert s == pytest.approx(2.5, rel=0.05)
    assert metrics.miscalibration_area(err, s * sigma) < 0.02


def test_reliability_curve(rng):
    sigma = rng.lognormal(size=30000)
    err = np.linalg.norm(sigma[:, None] * rng.normal(size=(sigma.size, 3)), axis=1)
    c = metrics.reliability_curve(err, sigma, n_bins=10, dof=3)
    assert c.count.sum() == sigma.size and len(c.rmv) == 10
    assert np.all(np.diff(c.rmv) > 0)
    assert np.allclose(c.rmse / c.rmv, 1.0, atol=0.08)
    assert c.ence < 0.05
    bad = metrics.reliability_curve(err, rng.permutation(sigma), n_bins=10, dof=3)
    assert bad.ence > 0.3


@pytest.mark.parametrize("method", ["isotonic", "power"])
def test_error_map_monotone_and_json(tmp_path, rng, method):
    gamma = rng.lognormal(size=3000)
    err = 0.05 * gamma ** 0.8 * rng.lognormal(sigma=0.3, size=3000)
    m = metrics.ErrorMap.fit(gamma, err, method=method)
    grid = np.geomspace(0.05, 50, 50)
    pred = m(grid)
    assert np.all(np.diff(pred) >= -1e-15)
    # the map predicts the conditional mean: check in the well-populated middle
    mid = (gamma > 0.8) & (gamma < 1.25)
    assert m(1.0) == pytest.approx(err[mid].mean(), rel=0.2)
    path = tmp_path / "map.json"
    m.save(path)
    d = json.loads(path.read_text())
    assert d["format"] == "aceuq-error-map" and d["method"] == method and d["units"] == "eV/A"
    m2 = metrics.ErrorMap.load(path)
    assert np.allclose(m2(grid), pred)
    if method == "power":
        assert m.b == pytest.approx(0.8, abs=0.05)


def test_error_map_bad_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="x.json"):
        metrics.ErrorMap.load(p)
    p.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an aceuq error map"):
        metrics.ErrorMap.load(p)


def test_novelty_detection_agrees_with_sklearn(rng):
    from sklearn.metrics import average_precision_score, roc_auc_score

    known = rng.normal(0, 1, 300)
    novel = rng.normal(1.5, 1, 100)
    d = metrics.novelty_detection(known, novel, threshold=1.0)
    y = np.r_[np.zeros(300), np.ones(100)]
    s = np.r_[known, novel]
    assert d.roc_auc == pytest.approx(roc_auc_score(y, s))
    assert d.pr_auc == pytest.approx(average_precision_score(y, s))
    assert d.detection_rate == pytest.approx(np.mean(novel > 1.0))
    assert d.false_alarm_rate == pytest.approx(np.mean(known > 1.0))
    # perfect separation and its reverse
    assert metrics.novelty_detection([0, 1, 2], [3, 4]).roc_auc == 1.0
    assert metrics.novelty_detection([3, 4], [0, 1, 2]).roc_auc == 0.0
    # infinite scores are allowed (an extrapolation grade can overflow)
    assert metrics.novelty_detection([0, 1], [np.inf, 2]).roc_auc == 1.0
    # nan (and -inf) rank below everything: a nan novel item is missed against both known ones
    assert metrics.novelty_detection([0.0, 1.0], [np.nan, 5.0]).roc_auc == 0.5
    assert metrics.novelty_detection([0.0, 1.0], [-np.inf, 5.0]).roc_auc == 0.5
    assert np.isnan(metrics.novelty_detection([0], [1]).detection_rate)
    with pytest.raises(ValueError):
        metrics.novelty_detection([], [1.0])


def test_summarize(rng):
    sigma = rng.lognormal(size=2000)
    err = np.abs(sigma * rng.normal(size=2000))
    s = metrics.summarize(sigma, err, sigma_like=True)
    assert set(s) == {"spearman", "pearson", "miscalibration_area", "z_rms"}
    assert s["miscalibration_area"] < 0.03
    assert set(metrics.summarize(sigma, err)) == {"spearman", "pearson"}


def test_plots_are_pngs(tmp_path, rng):
    sigma = rng.lognormal(size=500)
    err = np.abs(sigma * rng.normal(size=500))
    files = [
        metrics.plot_parity(sigma, err, tmp_path / "parity.png"),
        metrics.plot_reliability({"ens": metrics.reliability_curve(err, sigma)}, tmp_path / "rel.png"),
        metrics.plot_calibration({"ens": metrics.calibration_curve(err, sigma)}, tmp_path / "cal.png"),
        metrics.plot_roc({"g": (rng.normal(size=50), rng.normal(2, 1, 20))}, tmp_path / "roc.png"),
        # an overflowed γ (+inf) is plotted as novelty_detection ranks it, not refused
        metrics.plot_roc({"g": (rng.normal(size=50), np.append(rng.normal(2, 1, 20), np.inf))},
                         tmp_path / "roc_inf.png"),
        # nothing to plot (no finite pair): an empty plot, not a log-scale error
        metrics.plot_parity([], [], tmp_path / "parity_empty.png"),
    ]
    for f in files:
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_error_map_equals_isotonic_regression_and_log_log_fit(rng):
    """ErrorMap's documented models, recomputed: 'isotonic' is scikit-learn's IsotonicRegression
    (increasing, clipped) of the error on log(score), evaluated in and beyond the fitted range;
    'power' is the least-squares line of log(error) on log(score) (scipy's linregress), with the
    log-normal bias correction exp(var(residual)/2)."""
    from scipy.stats import linregress
    from sklearn.isotonic import IsotonicRegression

    gamma = rng.lognormal(size=500)
    err = 0.05 * gamma ** 0.8 * rng.lognormal(sigma=0.3, size=500)
    grid = np.concatenate([np.geomspace(gamma.min() / 10, gamma.max() * 10, 200), gamma[:50]])
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(np.log(gamma), err)
    m = metrics.ErrorMap.fit(gamma, err, method="isotonic")
    np.testing.assert_allclose(m(grid), iso.predict(np.log(grid)), rtol=1e-12, atol=1e-15)
    assert m(gamma.max() * 100) == pytest.approx(iso.predict([np.log(gamma.max())])[0], rel=1e-12)
    lr = linregress(np.log(gamma), np.log(err))
    resid = np.log(err) - (lr.intercept + lr.slope * np.log(gamma))
    p = metrics.ErrorMap.fit(gamma, err, method="power")
    expected = np.exp(lr.intercept + 0.5 * np.var(resid)) * grid ** lr.slope
    np.testing.assert_allclose(p(grid), expected, rtol=1e-10)
    # a line needs two points: positive errors at one score only give no power law
    with pytest.raises(ValueError, match="two or more distinct scores"):
        metrics.ErrorMap.fit([1.0, 2.0, 3.0], [0.0, 0.0, 1e-3], method="power")


def test_novelty_rates_count_strictly_above_the_threshold():
    """Detection and false-alarm rates count items with score > threshold (the Detection
    docstring), so an item exactly at the threshold is no alarm: known [1, 2] against
    threshold 2 gives no false alarm, novel [2, 3] half detected."""
    d = metrics.novelty_detection([1.0, 2.0], [2.0, 3.0], threshold=2.0)
    assert d.false_alarm_rate == 0.0
    assert d.detection_rate == 0.5
    assert d.threshold == 2.0


def test_calibration_factor_of_an_under_confident_sigma_solves_its_equation(rng):
    """With a floor, the factor a solves mean(e² / ((a σ)² + f²)) / dof = 1 (scipy's brentq here),
    also where σ is too large (a < 1: σ three times the spread gives a ≈ 1/3)."""
    from scipy.optimize import brentq

    sigma = rng.uniform(0.05, 0.5, 3000)
    err = np.linalg.norm(rng.normal(size=(3000, 3)) * sigma[:, None], axis=1)
    raw, floor = 3.0 * sigma, 1e-4
    root = np.exp(brentq(lambda la: np.mean(err ** 2 / (np.exp(2 * la) * raw ** 2 + floor ** 2)) / 3 - 1, -50, 5))
    assert 0.3 < root < 0.37
    assert metrics.calibration_factor(err, raw, dof=3, floor=floor) == pytest.approx(root, rel=1e-6)


def test_ence_is_the_mean_relative_gap_to_rmv(rng):
    """ENCE = mean over bins of |RMV − RMSE| / RMV (Levi et al.), from the curve's own bins: about 2
    for a σ three times too small."""
    sigma = rng.lognormal(size=30000)
    err = np.linalg.norm(sigma[:, None] * rng.normal(size=(sigma.size, 3)), axis=1)
    c = metrics.reliability_curve(err, sigma / 3, n_bins=10, dof=3)
    assert c.ence == pytest.approx(np.mean(np.abs(c.rmv - c.rmse) / c.rmv), rel=1e-12)
    assert 1.8 < c.ence < 2.2


def test_signed_errors_are_taken_as_their_size(rng):
    """Signed residuals (dof 1, energies): the calibration curve compares |e|/σ with the central
    interval, so calibrated Gaussian residuals lie on the diagonal; an error map predicts |e|
    (scikit-learn's isotonic regression of |e| on log score)."""
    from scipy.stats import chi
    from sklearn.isotonic import IsotonicRegression

    sigma = rng.lognormal(-2, 1, 20000)
    e = sigma * rng.normal(size=sigma.size)
    p, observed = metrics.calibration_curve(e, sigma, dof=1)
    np.testing.assert_allclose(observed, [np.mean(np.abs(e) / sigma <= chi.ppf(q, 1)) for q in p], atol=1e-12)
    assert metrics.miscalibration_area(e, sigma, dof=1) < 0.01
    gamma = rng.lognormal(size=3000)
    err = 0.05 * gamma * rng.normal(size=3000)
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(np.log(gamma), np.abs(err))
    grid = np.array([0.5, 1.0, 2.0, 5.0])
    np.testing.assert_allclose(metrics.ErrorMap.fit(gamma, err)(grid), iso.predict(np.log(grid)), rtol=1e-12)


def test_log_pearson_leaves_out_zero_errors(rng):
    """pearson(log=True) correlates the logs of the pairs where both are positive: exact
    predictions (error 0) are left out, not a log of 0 that makes the result NaN."""
    u = rng.lognormal(size=500)
    e = u * rng.lognormal(sigma=0.7, size=500)
    e[:3] = 0.0
    expected = stats.pearsonr(np.log(u[3:]), np.log(e[3:])).statistic
    assert metrics.pearson(u, e, log=True) == pytest.approx(expected, rel=1e-12)
