"""Tests of `ScoreSdeColorizationPipeline` and the orthonormal colour decoupling (Song et al. 2021, Appendix I.3).

Exact answer: an RGB mixture of 1x1 images built in the decoupled coordinates u = M x (gray u_0 = sqrt(3) *
mean(r, g, b), chroma u_1, u_2), with covariances diagonal there (full in RGB). Given the gray value, the chroma
follows the exact conditional of the mixture in u-space, computed from the RGB mixture mapped through M
(`exact_conditional` of tests/test_inpaint.py); the same responsibility-weighted estimates and 4-standard-error
tolerances as there (n = 4000). Like the inpainting test, the mixture is one where the replacement method is
exact: two gray clusters 2.4 apart in u_0, each with two chroma modes 0.35-0.5 apart.
"""

import math

import numpy as np
import PIL.Image
import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.guidance import COLORIZATION_MATRIX, couple, decouple, to_grayscale
from scoresde_diffusers.pipelines.score_sde_colorization import ScoreSdeColorizationPipeline

from pipeline_test_mixin import PipelineCommonTest
from test_inpaint import check_against_conditional, exact_conditional

M = COLORIZATION_MATRIX
WEIGHTS = [0.15, 0.25, 0.35, 0.25]
U_MEANS = torch.tensor([[-1.2, -0.25, 0.0], [-1.2, 0.25, 0.2], [1.2, -0.3, 0.1], [1.2, 0.2, -0.15]], dtype=torch.float64)
U_STDS = torch.tensor([[0.05, 0.05, 0.06], [0.05, 0.06, 0.04], [0.05, 0.05, 0.07], [0.05, 0.04, 0.05]], dtype=torch.float64)
RGB_MEANS = U_MEANS @ M  # x = M^T u, row-wise
RGB_COVS = M.T @ torch.diag_embed(U_STDS**2) @ M
GRAY = 1.25 / math.sqrt(3)  # u_0 = 1.25: the bright cluster
N = 4000


def rgb_pipeline(scheduler, dtype=torch.float64):
    model = GaussianMixtureScoreModel.from_mixture(WEIGHTS, RGB_MEANS, RGB_COVS, scheduler=scheduler, sample_size=1, in_channels=3).to(dtype)
    pipe = ScoreSdeColorizationPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TestColorizationCommon(PipelineCommonTest):
    pipeline_class = ScoreSdeColorizationPipeline
    output_types = ("pt", "np")  # pil: see test_pil_in_and_out (image-shaped components would break the mixin's vector check)
    callback_replaces_output = False  # the gray part is restored after the loop

    def get_dummy_components(self):
        scheduler = VPSDEScheduler()
        model = GaussianMixtureScoreModel.from_mixture(WEIGHTS, RGB_MEANS, RGB_COVS, scheduler=scheduler, sample_size=1, in_channels=3)
        return {"unet": model, "scheduler": scheduler}

    def get_dummy_inputs(self, generator):
        return {"image": torch.full((3, 1, 1, 1), GRAY), "num_inference_steps": 4, "generator": generator}


def test_decoupling_is_orthonormal_with_the_gray_direction_first():
    torch.testing.assert_close(M @ M.T, torch.eye(3, dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(M[0], torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64), atol=1e-15, rtol=0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    u = decouple(x)
    torch.testing.assert_close(u[:, :1], math.sqrt(3) * x.mean(dim=1, keepdim=True))
    torch.testing.assert_close(couple(u), x)


@pytest.mark.parametrize(
    "scheduler, sampler_kwargs",
    [
        (VPSDEScheduler(), {"num_inference_steps": 300}),
        (VESDEScheduler(sigma_max=5.0), {"num_inference_steps": 300, "corrector": "none"}),
        (VPSDEScheduler(), {"sampler": "ode", "solver": "dopri5"}),
    ],
    ids=["vp-reverse-diffusion", "ve-reverse-diffusion", "vp-ode-dopri5"],
)
def test_gray_is_kept_exactly_and_chroma_follows_the_exact_conditional(scheduler, sampler_kwargs):
    pipe = rgb_pipeline(scheduler)
    gray = torch.full((N, 1, 1, 1), GRAY, dtype=torch.float64)
    out = pipe(gray, generator=torch.Generator().manual_seed(0), output_type="pt", **sampler_kwargs)
    x = out.images
    assert x.shape == (N, 3, 1, 1)
    torch.testing.assert_close(x.mean(dim=1, keepdim=True), gray, atol=1e-14, rtol=0)
    # The exact conditional of the chroma given u_0, from the RGB mixture mapped through M.
    pi, mu, cov = exact_conditional(WEIGHTS, RGB_MEANS @ M.T, M @ RGB_COVS @ M.T, [0], torch.tensor([math.sqrt(3) * GRAY]))
    assert pi[2] > 0.5 and pi[:2].sum() < 1e-12
    check_against_conditional(decouple(x)[:, 1:, 0, 0], pi, mu, cov, f"{type(scheduler).__name__} {sampler_kwargs}")


def test_one_and_three_channel_gray_inputs_agree():
    pipe = rgb_pipeline(VPSDEScheduler())
    gray = torch.full((4, 1, 1, 1), GRAY, dtype=torch.float64)
    one = pipe(gray, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    three = pipe(gray.repeat(1, 3, 1, 1), num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(one, three, atol=1e-12, rtol=0)


def test_wrong_channel_counts_are_clear_errors():
    pipe = rgb_pipeline(VPSDEScheduler())
    for channels in (2, 4):
        with pytest.raises(ValueError, match="grayscale images of shape"):
            pipe(torch.zeros(1, channels, 1, 1), num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="grayscale images of shape"):
        to_grayscale(torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="pixels"):
        pipe(torch.zeros(1, 1, 2, 2), num_inference_steps=2, output_type="pt")
    gray_model_scheduler = VPSDEScheduler()
    gray_model = GaussianMixtureScoreModel.four_gaussians(scheduler=gray_model_scheduler, sample_size=1, in_channels=2)
    with pytest.raises(ValueError, match="RGB"):
        ScoreSdeColorizationPipeline(unet=gray_model, scheduler=gray_model_scheduler)(torch.zeros(1, 1, 1, 1), output_type="pt")


def test_pil_in_and_out():
    # A 2x2 RGB model (two colourings of the same gray pattern); PIL gray in, PIL colour out, gray kept.
    scheduler = VPSDEScheduler()
    base = torch.tensor([[0.6, -0.6], [-0.6, 0.6]], dtype=torch.float64)
    reddish = torch.stack([base + 0.3, base - 0.15, base - 0.15])
    bluish = torch.stack([base - 0.15, base - 0.15, base + 0.3])
    model = GaussianMixtureScoreModel.from_mixture([0.5, 0.5], torch.stack([reddish, bluish]).reshape(2, 12), [0.03, 0.03], scheduler=scheduler, sample_size=2, in_channels=3)
    pipe = ScoreSdeColorizationPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    gray_pil = PIL.Image.fromarray(((base.numpy() + 1) * 127.5).round().astype(np.uint8), mode="L")
    images = pipe([gray_pil, gray_pil.convert("RGB")], num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="pil").images
    assert len(images) == 2 and all(isinstance(i, PIL.Image.Image) and i.mode == "RGB" and i.size == (2, 2) for i in images)
    out = pipe(gray_pil, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="pt").images
    expected_gray = torch.from_numpy(np.asarray(gray_pil, dtype=np.float64) / 255 * 2 - 1)
    torch.testing.assert_close(out.mean(dim=1)[0].double(), expected_gray, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0].double(), reddish if out[0, 0, 0, 0] > out[0, 2, 0, 0] else bluish, atol=0.15, rtol=0)
