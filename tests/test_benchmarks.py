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
    assert {r["sampler"] for r in rows} == default | {"exact-model settings, 20 NFE", "exact-model settings, 35 NFE", "PC 20 steps (reference)"}
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
    assert {"diffusers DDIM", "diffusers DPM-Solver++", "diffusers UniPC", module.DEFAULT, module.SMOOTH} <= names
    assert all(r["frechet"] >= 0 and r["kid_se"] > 0 and set(r) >= {"kid", "kid_se", "kid_se_samples", "frechet"} for r in rows)
    assert rows[0]["sampler"] == module.REAL and rows[0]["nfe"] == 0 and "kid_vs_default" not in rows[0]
    assert all(r["kid_vs_default_se"] > 0 for r in rows[1:] if r["sampler"] != module.DEFAULT)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- trained_digits:start -->\n#### VP UNet" in text and "KID x 1000" in text and "reference set of 1765 real digits" in text and "paired jackknife" in text
    # The ODE accuracy table: every ODE sampler at every NFE, with its distance to the converged solution.
    ode_rows = json.loads((tmp_path / "trained_digits_ode_accuracy.json").read_text())
    assert {(r["sampler"], r["nfe"]) for r in ode_rows[1:]} == {(name, nfe) for name in (module.DEFAULT, module.SMOOTH) for nfe in (3, 5)}
    assert all(r["rms"] >= 0 for r in ode_rows) and "How accurately each ODE sampler" in text


def test_trained_digits_longer_trained_unet_gets_its_own_section(tmp_path):
    module = load("trained_digits")
    assert module.training_steps(tmp_path) is None  # a folder not written by train.py: the default sections
    assert module.section("vp", None) == ("trained_digits", "#### VP UNet")
    (tmp_path / "training_config.json").write_text(json.dumps({"sde": "ve", "max_train_steps": 1600}))
    assert module.section("ve", module.training_steps(tmp_path)) == ("trained_digits_ve", "#### VE UNet")
    (tmp_path / "training_config.json").write_text(json.dumps({"sde": "ve", "max_train_steps": 6400}))
    assert module.section("ve", module.training_steps(tmp_path)) == ("trained_digits_ve_6400steps", "#### VE UNet, 6400 training steps")


def test_trained_digits_split_is_seeded_and_disjoint():
    module = load("trained_digits")
    reference, held_out = module.split_real(512, seed=3)
    assert reference.shape == (1797 - 512, 64) and held_out.shape == (512, 64)
    again, _ = module.split_real(512, seed=3)
    assert torch.equal(reference, again)
    # No held-out digit is a reference row (the digits have a few exact duplicates, hence the count, not the equality).
    same = (held_out[:, None] == reference[None]).all(-1).any(1)
    assert same.sum() <= 5


def test_ode_vs_pc_digits_quick(tmp_path):
    from diffusers import UNet2DModel

    from scoresde_diffusers import VESDEScheduler
    from scoresde_diffusers.pipelines import ScoreSdePCPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    ScoreSdePCPipeline(unet=unet, scheduler=VESDEScheduler()).save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe" / "training_config.json").write_text(json.dumps({"max_train_steps": 20}))
    module = load("ode_vs_pc_digits")
    module.main(["--quick", "--pipeline", str(tmp_path / "pipe"), "--out_dir", str(tmp_path)])
    (result,) = json.loads((tmp_path / "ode_vs_pc_digits.json").read_text())
    assert result["sde"] == "ve" and result["training_steps"] == 20 and len(result["seeds"]) == 2
    # The summary is the mean of the per-seed paired differences; the unbiased KID is linear in the kernel sums, so
    # each paired difference is exactly the PC's KID minus the ODE's.
    assert result["pc_minus_ode"] == pytest.approx(sum(r["pc_minus_ode"] for r in result["seeds"]) / 2)
    assert all(r["pc_minus_ode"] == pytest.approx(r["pc"] - r["ode"], abs=1e-6) and r["pc_minus_ode_se"] > 0 for r in result["seeds"])
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- ode_vs_pc_digits:start -->" in text and "| VE | 20 | reverse_diffusion/langevin |" in text


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
