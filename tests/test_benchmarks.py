"""Every benchmark script runs in its quick mode (so they never rot); their numbers are not asserted."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


def test_quality_vs_nfe_quick(tmp_path):
    module = load("quality_vs_nfe")
    module.main(["--quick", "--out_dir", str(tmp_path), "--mixtures", "ring2d"])
    rows = json.loads((tmp_path / "quality_vs_nfe.json").read_text())
    assert {r["sde"] for r in rows} == {"vp", "subvp", "ve"}
    assert any(r["sampler"].startswith("diffusers") for r in rows)
    assert all(r["nfe"] > 0 for r in rows)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- quality_vs_nfe:start -->" in text and "| ring2d |" in text
    assert (tmp_path / "quality_vs_nfe.png").stat().st_size > 0


def test_overhead_quick(tmp_path):
    module = load("overhead")
    out = tmp_path / "benchmarks.md"
    module.main(["--quick", "--out", str(out)])
    assert "relative to bare torch" in out.read_text()


def test_write_section_replaces_in_place(tmp_path):
    common = load("common")
    path = tmp_path / "page.md"
    path.write_text("# Page\n\nintro\n")
    common.write_section("x", "first", path)
    common.write_section("x", "second", path)
    text = path.read_text()
    assert "second" in text and "first" not in text and text.startswith("# Page")


def test_likelihood_vs_nfe_quick(tmp_path):
    module = load("likelihood_vs_nfe")
    module.main(["--quick", "--out_dir", str(tmp_path)])
    rows = json.loads((tmp_path / "likelihood_vs_nfe.json").read_text())
    assert {r["sde"] for r in rows} >= {"vp", "subvp", "ve"}
    assert {r["estimator"] for r in rows} == {"exact", "Hutchinson, Rademacher", "Hutchinson, Gaussian"}
    assert {r["solver"] for r in rows} >= {"dopri5", "rk4"} and all(r["nfe"] > 0 for r in rows)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- likelihood_vs_nfe:start -->" in text and "| ring2d | vp | exact |" in text
    assert (tmp_path / "likelihood_vs_nfe.png").stat().st_size > 0


def test_training_throughput_quick(tmp_path):
    module = load("training_throughput")
    out = tmp_path / "benchmarks.md"
    module.main(["--quick", "--out", str(out)])
    text = out.read_text()
    assert "<!-- training_throughput:start -->" in text and "relative to bare torch" in text
    assert "| train() (examples/train.py) | yes |" in text


def test_mixture_family_quick(tmp_path):
    module = load("mixture_family")
    out = tmp_path / "benchmarks.md"
    rows, members = module.main(["--quick", "--seed", "0", "--mixtures", "1", "--pc_steps", "20", "--out", str(out)])
    assert {r["sde"] for r in rows} == {"vp", "subvp", "ve"} and len(members) == 4
    default = {f"default ODE, {n} NFE" for n in (10, 15, 20, 35)}
    assert {r["sampler"] for r in rows} == default | {"logSNR grid, 20 NFE", "logSNR grid, 35 NFE", "PC 20 steps (reference)"}
    text = out.read_text()
    assert "<!-- mixture_family:start -->" in text and "| ve (sigma_max = rule) | default ODE, 35 NFE | " in text
    assert json.loads((tmp_path / "mixture_family.json").read_text())["seed"] == 0


def test_trained_digits_quick(tmp_path):
    from diffusers import UNet2DModel

    from scoresde_diffusers import VPSDEScheduler
    from scoresde_diffusers.pipelines import ScoreSdePCPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    ScoreSdePCPipeline(unet=unet, scheduler=VPSDEScheduler()).save_pretrained(tmp_path / "pipe")
    module = load("trained_digits")
    module.main(["--quick", "--pipeline", str(tmp_path / "pipe"), "--out_dir", str(tmp_path)])
    rows = json.loads((tmp_path / "trained_digits.json").read_text())
    names = {r["sampler"] for r in rows}
    assert {"diffusers DDIM", "diffusers DPM-Solver++", "diffusers UniPC", "ours: ScoreSdeODEPipeline default"} <= names
    assert all(r["frechet"] >= 0 and r["kid_se"] > 0 and set(r) >= {"kid", "kid_se", "kid_se_samples", "frechet"} for r in rows)
    assert rows[0]["sampler"] == module.REAL and rows[0]["nfe"] == 0 and "kid_vs_default" not in rows[0]
    assert all(r["kid_vs_default_se"] > 0 for r in rows[1:] if r["sampler"] != module.DEFAULT)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- trained_digits:start -->\n#### VP UNet" in text and "KID x 1000" in text and "reference set of 1765 real digits" in text and "paired jackknife" in text


def test_trained_digits_split_is_seeded_and_disjoint():
    module = load("trained_digits")
    reference, held_out = module.split_real(512, seed=3)
    assert reference.shape == (1797 - 512, 64) and held_out.shape == (512, 64)
    again, _ = module.split_real(512, seed=3)
    assert torch.equal(reference, again)
    # No held-out digit is a reference row (the digits have a few exact duplicates, hence the count, not the equality).
    same = (held_out[:, None] == reference[None]).all(-1).any(1)
    assert same.sum() <= 5


def test_pc_last_step_quick(tmp_path):
    module = load("pc_last_step")
    out = tmp_path / "benchmarks.md"
    rows, members = module.main(["--quick", "--seed", "0", "--steps", "20", "--out", str(out)])
    assert {r["sde"] for r in rows} == {"vp", "subvp", "ve"} and len(members) == 4
    assert {r["option"] for r in rows} == set(module.OPTIONS) and all(r["nfe"] > 0 for r in rows)
    # The last step alone, from exact p_eps draws, follows the closed forms' ordering on VE: Tweedie too narrow
    # (gap < 0), no denoising too wide (gap > 0), the probability-flow step between them.
    ve = {r["option"]: r["exact_start_gap"] for r in rows if r["member"] == "0.0"}
    assert ve["score_sde"] < ve["probability_flow"] < ve["keep_noise"] and ve["score_sde"] < 0 < ve["keep_noise"]
    text = out.read_text()
    assert "<!-- pc_last_step:start -->" in text and "| ve (sigma_max = rule) | `probability_flow` | " in text
    assert json.loads((tmp_path / "pc_last_step.json").read_text())["seed"] == 0


def test_trained_digits_frechet_distance_matches_the_gaussian_closed_form():
    # Two Gaussians N(0, I) and N(m, diag(4)) in 3-D: ||m||^2 + tr(I + 4I - 2 * 2I) = ||m||^2 + 3.
    module = load("trained_digits")
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=generator, dtype=torch.float64)
    b = 2 * torch.randn(200_000, 3, generator=generator, dtype=torch.float64) + torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    assert module.frechet_distance(a, b) == pytest.approx(2.0 + 3.0, abs=0.05)
    assert module.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_trained_digits_kid_matches_a_double_loop_on_a_hand_example():
    module = load("trained_digits")
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

    value, se = module.kid(x, y)
    assert value == pytest.approx(mmd2(x, y), rel=1e-12)
    # The jackknife, by brute force: recompute with each x_i, then each y_j, left out.
    drop_x = torch.tensor([mmd2(torch.cat([x[:i], x[i + 1 :]]), y) for i in range(5)], dtype=torch.float64)
    drop_y = torch.tensor([mmd2(x, torch.cat([y[:j], y[j + 1 :]])) for j in range(4)], dtype=torch.float64)
    variance = 4 / 5 * (drop_x - drop_x.mean()).square().sum() + 3 / 4 * (drop_y - drop_y.mean()).square().sum()
    assert se == pytest.approx(float(variance.sqrt()), rel=1e-10)
    assert module.kid(x, y, given_y=True)[2] == pytest.approx(float((4 / 5 * (drop_x - drop_x.mean()).square().sum()).sqrt()), rel=1e-10)


def test_trained_digits_kid_is_unbiased_with_an_honest_standard_error():
    # Same distribution: KID is 0 in expectation (the unbiased estimator goes negative half the time), within its se;
    # over repeated draws the jackknife se matches the actual spread of the estimates.
    module = load("trained_digits")
    generator = torch.Generator().manual_seed(0)
    values, ses = [], []
    for _ in range(200):
        value, se = module.kid(torch.randn(60, 4, generator=generator, dtype=torch.float64), torch.randn(90, 4, generator=generator, dtype=torch.float64))
        values.append(value)
        ses.append(se)
    values, ses = torch.tensor(values), torch.tensor(ses)
    assert abs(float(values.mean())) < 3 * float(values.std()) / 200**0.5
    assert float(values.std()) == pytest.approx(float(ses.mean()), rel=0.25)
    value, se = module.kid(torch.randn(500, 8, generator=generator, dtype=torch.float64), torch.randn(1000, 8, generator=generator, dtype=torch.float64))
    assert abs(value) < 3 * se


def test_trained_digits_kid_is_positive_for_a_mean_shift():
    # N(0, I) against N(m, I) in d = 4 with x.y / d: MMD^2 of the cubic kernel is a polynomial in the moments, positive
    # for m != 0; the estimate is many standard errors above zero.
    module = load("trained_digits")
    generator = torch.Generator().manual_seed(1)
    shift = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    value, se = module.kid(torch.randn(500, 4, generator=generator, dtype=torch.float64), torch.randn(800, 4, generator=generator, dtype=torch.float64) + shift)
    assert value > 5 * se > 0


def test_trained_digits_kid_difference_is_the_paired_jackknife():
    module = load("trained_digits")
    generator = torch.Generator().manual_seed(2)
    x1, y = torch.randn(6, 3, generator=generator, dtype=torch.float64), torch.randn(5, 3, generator=generator, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(6, 3, generator=generator, dtype=torch.float64)  # paired with x1, row by row
    value, se = module.kid_difference(x1, x2, y)
    assert value == pytest.approx(module.kid(x1, y)[0] - module.kid(x2, y)[0], rel=1e-12)

    def without(a, i):
        return torch.cat([a[:i], a[i + 1 :]])

    drop_x = torch.tensor([module.kid(without(x1, i), y)[0] - module.kid(without(x2, i), y)[0] for i in range(6)], dtype=torch.float64)
    drop_y = torch.tensor([module.kid(x1, without(y, j))[0] - module.kid(x2, without(y, j))[0] for j in range(5)], dtype=torch.float64)
    variance = 5 / 6 * (drop_x - drop_x.mean()).square().sum() + 4 / 5 * (drop_y - drop_y.mean()).square().sum()
    assert se == pytest.approx(float(variance.sqrt()), rel=1e-9)
    # Paired sets that differ little: the difference is known far better than either KID.
    assert se < 0.5 * min(module.kid(x1, y)[1], module.kid(x2, y)[1])
