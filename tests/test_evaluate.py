"""`examples/evaluate.py` and `scoresde_diffusers.evaluation`: FID / KID with a small feature extractor (no Inception
weights here), bits/dim through the likelihood pipeline, the clear error when Inception weights are absent, and
the exact mixture metrics."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchmetrics")

from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
from scoresde_diffusers.evaluation import image_distribution_metrics, kid, load_inception_feature, mixture_sample_metrics
from scoresde_diffusers.pipelines import ScoreSdeODEPipeline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "evaluate.py"


def load_example():
    spec = importlib.util.spec_from_file_location("evaluate_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Pixels(torch.nn.Module):
    def forward(self, x):
        return x.float().flatten(1) / 255.0


def test_fid_is_small_for_one_distribution_and_large_for_another():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(400, 1, 2, 2, generator=g) * 2 - 1
    same = torch.rand(400, 1, 2, 2, generator=g) * 2 - 1
    other = (torch.rand(400, 1, 2, 2, generator=g) * 2 - 1) * 0.3
    close = image_distribution_metrics(real, same, feature=Pixels(), kid_subset_size=100)
    far = image_distribution_metrics(real, other, feature=Pixels(), kid_subset_size=100)
    assert close["fid"] < 0.05 < far["fid"] and close["kid_mean"] < far["kid_mean"]


def test_image_metrics_report_the_full_set_kid_of_the_same_features_with_its_standard_error():
    # torchmetrics' kid_mean averages random subsets; `kid` is the one unbiased estimate on all images, the same
    # kernel on the same features, so the two agree within the estimate's standard error.
    g = torch.Generator().manual_seed(1)
    real = torch.rand(300, 1, 2, 2, generator=g) * 2 - 1
    fake = (torch.rand(300, 1, 2, 2, generator=g) * 2 - 1) * 0.3 + 0.5
    metrics = image_distribution_metrics(real, fake, feature=Pixels(), kid_subset_size=100)
    features = [Pixels()(((x + 1) / 2 * 255).round().to(torch.uint8)) for x in (fake, real)]
    assert (metrics["kid"], metrics["kid_se"]) == pytest.approx(kid(*features), rel=1e-6)
    assert metrics["kid"] > 3 * metrics["kid_se"] > 0
    assert abs(metrics["kid_mean"] - metrics["kid"]) < 2 * metrics["kid_se"]


def test_missing_inception_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises((FileNotFoundError, ImportError), match="weights|torch-fidelity"):
        load_inception_feature(None)
    with pytest.raises((FileNotFoundError, ImportError), match="weights|torch-fidelity"):
        load_inception_feature(str(tmp_path / "nope.pth"))


def test_mixture_metrics_of_true_samples_are_at_the_floor():
    model = GaussianMixtureScoreModel.four_gaussians().double()
    samples = model.sample_data(4000, generator=torch.Generator().manual_seed(5))
    m = mixture_sample_metrics(model, samples, num_reference=20000)
    assert abs(m["logp_gap"]) < 4 * m["logp_gap_floor"]
    assert m["spread"] < 0.05 and m["mode_tv"] < 4 * m["mode_tv_floor"] + 0.01
    widened = mixture_sample_metrics(model, samples + 0.2 * torch.randn(samples.shape, generator=torch.Generator().manual_seed(6), dtype=samples.dtype), num_reference=20000)
    assert widened["logp_gap"] > 10 * m["logp_gap_floor"]  # too spread out: a positive gap


def test_evaluate_script_writes_a_report(tmp_path):
    torch.set_num_threads(1)
    scheduler = VPSDEScheduler()
    # A 4x4 greyscale "image" mixture, so that the digits data set (resized to 4x4) is its data set.
    g = torch.Generator().manual_seed(0)
    model = GaussianMixtureScoreModel.from_mixture([0.5, 0.5], torch.rand(2, 16, generator=g, dtype=torch.float64) - 0.5, [0.3, 0.3], scheduler=scheduler, sample_size=4, in_channels=1)
    ScoreSdeODEPipeline(unet=model, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    out = tmp_path / "report.json"
    module = load_example()
    module.main([
        "--pipeline", str(tmp_path / "pipe"), "--dataset", "digits", "--resolution", "4", "--num_samples", "64",
        "--batch_size", "32", "--num_inference_steps", "10", "--feature_extractor", "pixels", "--kid_subset_size", "32",
        "--bpd_samples", "8", "--bpd_rtol", "1e-3", "--out", str(out),
    ])
    report = json.loads(out.read_text())
    assert report["num_generated"] == 64 and report["fid"] >= 0 and "kid_mean" in report and report["kid_se"] > 0
    # digits resized to 4x4 are averages of pixels, off their 17 levels: a continuous log-density, in nats
    assert report["nfe_per_sample"] > 0 and report["bpd_num_samples"] == 8 and report["nats_per_dim"] == report["nats_per_dim"]
    assert report["num_levels"] is None and "bits_per_dim" not in report
    with pytest.raises((FileNotFoundError, ImportError)):
        module.main(["--pipeline", str(tmp_path / "pipe"), "--resolution", "4", "--inception_weights", str(tmp_path / "missing.pth"), "--out", str(out)])
