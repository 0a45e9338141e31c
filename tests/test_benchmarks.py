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
    module.main(["--quick", "--out-dir", str(tmp_path), "--mixtures", "ring2d"])
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
    module.main(["--quick", "--out-dir", str(tmp_path)])
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
    rows, members = module.main(["--quick", "--seed", "0", "--mixtures", "1", "--pc-steps", "20", "--out", str(out)])
    assert {r["sde"] for r in rows} == {"vp", "subvp", "ve"} and len(members) == 4
    assert {r["sampler"] for r in rows} == {"default ODE, 10 NFE", "default ODE, 15 NFE", "default ODE, 20 NFE", "default ODE, 35 NFE", "PC 20 steps (reference)"}
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
    module.main(["--quick", "--pipeline", str(tmp_path / "pipe"), "--out-dir", str(tmp_path)])
    rows = json.loads((tmp_path / "trained_digits.json").read_text())
    names = {r["sampler"] for r in rows}
    assert {"diffusers DDIM", "diffusers DPM-Solver++", "diffusers UniPC", "ours: ScoreSdeODEPipeline default"} <= names
    assert all(r["frechet"] >= 0 for r in rows)
    assert "<!-- trained_digits:start -->\n#### VP UNet" in (tmp_path / "benchmarks.md").read_text()


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
