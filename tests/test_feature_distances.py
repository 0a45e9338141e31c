"""The feature-set distances of `scoresde_diffusers.evaluation` (the trained-network benchmark's yardstick): the
unbiased KID against a double loop, its jackknife standard error against brute force and against the spread of
repeated draws, the paired difference of two samplers, and the Frechet distance against the Gaussian closed form."""

import pytest
import torch

from scoresde_diffusers.evaluation import frechet_distance, kid, kid_difference


def test_frechet_distance_matches_the_gaussian_closed_form():
    # Two Gaussians N(0, I) and N(m, diag(4)) in 3-D: ||m||^2 + tr(I + 4I - 2 * 2I) = ||m||^2 + 3.
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=generator, dtype=torch.float64)
    b = 2 * torch.randn(200_000, 3, generator=generator, dtype=torch.float64) + torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    assert frechet_distance(a, b) == pytest.approx(2.0 + 3.0, abs=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_kid_matches_a_double_loop_on_a_hand_example():
    x = torch.tensor([[0.0, 1.0], [1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0], [0.0, -2.0], [3.0, 0.0], [-0.5, 1.5]], dtype=torch.float64)

    def k(a, b):
        return (float(a @ b) / 2 + 1) ** 3

    def mmd2(x, y):
        m, n = len(x), len(y)
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
        return xx + yy - 2 * xy

    value, se = kid(x, y)
    assert value == pytest.approx(mmd2(x, y), rel=1e-12)
    # The jackknife, by brute force: recompute with each x_i, then each y_j, left out.
    drop_x = torch.tensor([mmd2(torch.cat([x[:i], x[i + 1 :]]), y) for i in range(5)], dtype=torch.float64)
    drop_y = torch.tensor([mmd2(x, torch.cat([y[:j], y[j + 1 :]])) for j in range(4)], dtype=torch.float64)
    variance = 4 / 5 * (drop_x - drop_x.mean()).square().sum() + 3 / 4 * (drop_y - drop_y.mean()).square().sum()
    assert se == pytest.approx(float(variance.sqrt()), rel=1e-10)
    assert kid(x, y, given_y=True)[2] == pytest.approx(float((4 / 5 * (drop_x - drop_x.mean()).square().sum()).sqrt()), rel=1e-10)


def test_kid_is_unbiased_with_an_honest_standard_error():
    # Same distribution: KID is 0 in expectation (the unbiased estimator goes negative half the time), within its se;
    # over repeated draws the jackknife se matches the actual spread of the estimates.
    generator = torch.Generator().manual_seed(0)
    values, ses = [], []
    for _ in range(200):
        value, se = kid(torch.randn(60, 4, generator=generator, dtype=torch.float64), torch.randn(90, 4, generator=generator, dtype=torch.float64))
        values.append(value)
        ses.append(se)
    values, ses = torch.tensor(values), torch.tensor(ses)
    assert abs(float(values.mean())) < 3 * float(values.std()) / 200**0.5
    assert float(values.std()) == pytest.approx(float(ses.mean()), rel=0.25)
    value, se = kid(torch.randn(500, 8, generator=generator, dtype=torch.float64), torch.randn(1000, 8, generator=generator, dtype=torch.float64))
    assert abs(value) < 3 * se


def test_kid_is_positive_for_a_mean_shift():
    # N(0, I) against N(m, I) in d = 4 with x.y / d: MMD^2 of the cubic kernel is a polynomial in the moments, positive
    # for m != 0; the estimate is many standard errors above zero.
    generator = torch.Generator().manual_seed(1)
    shift = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    value, se = kid(torch.randn(500, 4, generator=generator, dtype=torch.float64), torch.randn(800, 4, generator=generator, dtype=torch.float64) + shift)
    assert value > 5 * se > 0


def test_kid_difference_is_the_paired_jackknife():
    generator = torch.Generator().manual_seed(2)
    x1, y = torch.randn(6, 3, generator=generator, dtype=torch.float64), torch.randn(5, 3, generator=generator, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(6, 3, generator=generator, dtype=torch.float64)  # paired with x1, row by row
    value, se = kid_difference(x1, x2, y)
    assert value == pytest.approx(kid(x1, y)[0] - kid(x2, y)[0], rel=1e-12)

    def without(a, i):
        return torch.cat([a[:i], a[i + 1 :]])

    drop_x = torch.tensor([kid(without(x1, i), y)[0] - kid(without(x2, i), y)[0] for i in range(6)], dtype=torch.float64)
    drop_y = torch.tensor([kid(x1, without(y, j))[0] - kid(x2, without(y, j))[0] for j in range(5)], dtype=torch.float64)
    variance = 5 / 6 * (drop_x - drop_x.mean()).square().sum() + 4 / 5 * (drop_y - drop_y.mean()).square().sum()
    assert se == pytest.approx(float(variance.sqrt()), rel=1e-9)
    # Paired sets that differ little: the difference is known far better than either KID.
    assert se < 0.5 * min(kid(x1, y)[1], kid(x2, y)[1])
