"""Tests of `ScoreSdeInpaintPipeline` and the imputation maths of `scoresde_diffusers.guidance`.

Exact answer: a 3-D Gaussian mixture whose first coordinate is known. For p = sum_j w_j N(mu_j, Sigma_j) and a
known part x_k = y, p(x_u | y) = sum_j pi_j N(mu_j,u + S_uk S_kk^-1 (y - mu_j,k), S_uu - S_uk S_kk^-1 S_ku) with
pi_j proportional to w_j N(y; mu_j,k, S_kk) (`exact_conditional`). The test mixture is one where the replacement
method of the paper is exact (see the pipeline's docstring): diagonal covariances (known and unknown coordinates
independent within a mode), two clusters 16 apart in the known coordinate, each with two modes 2.5-2.9 apart in
the unknown ones, equal known-coordinate spread inside a cluster. The mode weights, means and variances of the
samples are estimated with the exact conditional's responsibilities r_j(x_u) (E[r_j] = pi_j, E[r_j x_u] / pi_j =
mean_j, ...: no misclassification bias), with tolerances of 4 standard errors of those estimates (n = 4000):
weights 4 sqrt(pi (1 - pi) / n) ~ 0.031, means 4 sd / sqrt(n pi) ~ 0.03-0.06, variances 4 var sqrt(2 / (n pi)).
"""

import numpy as np
import PIL.Image
import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, ScoreSdeDPMSolverMultistepScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.guidance import impute, prepare_mask
from scoresde_diffusers.pipelines.score_sde_inpaint import ScoreSdeInpaintPipeline

from pipeline_test_mixin import PipelineCommonTest

WEIGHTS = [0.15, 0.25, 0.35, 0.25]
MEANS = [[-8.0, -1.0, 0.0], [-8.0, 1.0, 1.0], [8.0, -1.5, 0.5], [8.0, 1.0, -1.0]]
STDS = [[0.4, 0.3, 0.5], [0.4, 0.5, 0.3], [0.3, 0.4, 0.6], [0.3, 0.3, 0.4]]
Y = 8.3
N = 4000


def exact_conditional(weights, means, covariances, known, y):
    """(pi (K,), means (K, U), covariances (K, U, U)) of p(x_u | x_known = y) for a Gaussian mixture."""
    weights, means, covariances = (torch.as_tensor(v, dtype=torch.float64) for v in (weights, means, covariances))
    k = torch.as_tensor(known)
    u = torch.tensor([i for i in range(means.shape[1]) if i not in known])
    log_pi, mu, cov = [], [], []
    for w, m, s in zip(weights, means, covariances):
        s_kk, s_uk, s_uu = s[k][:, k], s[u][:, k], s[u][:, u]
        gain = s_uk @ torch.linalg.inv(s_kk)
        log_pi.append(w.log() + torch.distributions.MultivariateNormal(m[k], s_kk).log_prob(torch.as_tensor(y, dtype=torch.float64)))
        mu.append(m[u] + gain @ (torch.as_tensor(y, dtype=torch.float64) - m[k]))
        cov.append(s_uu - gain @ s_uk.T)
    return torch.softmax(torch.stack(log_pi), 0), torch.stack(mu), torch.stack(cov)


def check_against_conditional(x_u: torch.Tensor, pi, mu, cov, label: str):
    """Responsibility-weighted weights, means and (diagonal) variances of the samples against the exact ones."""
    n = x_u.shape[0]
    log_r = torch.stack([pi[j].log() + torch.distributions.MultivariateNormal(mu[j], cov[j]).log_prob(x_u) for j in range(len(pi))], 1)
    r = torch.softmax(log_r.nan_to_num(neginf=-1e300), dim=1)
    weights = r.mean(0)
    allowed = 4 * (pi * (1 - pi) / n).sqrt() + 0.002
    assert torch.all((weights - pi).abs() <= allowed), f"{label}: weights {weights.tolist()} vs {pi.tolist()}"
    for j in torch.nonzero(pi > 0.05).flatten().tolist():
        mass = r[:, j].sum()
        mean = (r[:, j, None] * x_u).sum(0) / mass
        var = (r[:, j, None] * (x_u - mu[j]) ** 2).sum(0) / mass
        exact_var = torch.diagonal(cov[j])
        assert torch.all((mean - mu[j]).abs() <= 4 * (exact_var / mass).sqrt() + 0.01), f"{label} mode {j}: mean {mean.tolist()} vs {mu[j].tolist()}"
        assert torch.all((var / exact_var - 1).abs() <= 4 * (2 / mass).sqrt() + 0.03), f"{label} mode {j}: var {var.tolist()} vs {exact_var.tolist()}"
    return weights


def mixture_pipeline(scheduler):
    model = GaussianMixtureScoreModel.from_mixture(WEIGHTS, MEANS, STDS, scheduler=scheduler).double()
    pipe = ScoreSdeInpaintPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------- common checks
class TestInpaintPCCommon(PipelineCommonTest):
    pipeline_class = ScoreSdeInpaintPipeline
    callback_replaces_output = False  # the known part is restored after the loop

    def get_dummy_components(self):
        scheduler = VPSDEScheduler()
        return {"unet": GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), "scheduler": scheduler}

    def get_dummy_image_components(self):
        return None  # pil output is tested below with image-shaped inputs

    def get_dummy_inputs(self, generator):
        image = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [2.0, 0.0]])
        return {"image": image, "mask_image": torch.tensor([0.0, 1.0]), "num_inference_steps": 4, "generator": generator}


class TestInpaintODECommon(TestInpaintPCCommon):
    def get_dummy_inputs(self, generator):
        return {**super().get_dummy_inputs(generator), "sampler": "ode", "solver": "euler"}


# ---------------------------------------------------------------------------------------------- exact answers
def test_exact_conditional_helper_on_a_correlated_gaussian():
    # One 2-D Gaussian: the textbook formulas.
    cov = torch.tensor([[[1.0, 0.6], [0.6, 2.0]]], dtype=torch.float64)
    pi, mu, var = exact_conditional([1.0], [[1.0, -1.0]], cov, [0], torch.tensor([2.0]))
    torch.testing.assert_close(mu, torch.tensor([[-1.0 + 0.6 * 1.0]], dtype=torch.float64))
    torch.testing.assert_close(var, torch.tensor([[[2.0 - 0.36]]], dtype=torch.float64))


@pytest.mark.parametrize(
    "scheduler, sampler_kwargs",
    [
        (VPSDEScheduler(), {"num_inference_steps": 300}),
        (VESDEScheduler(sigma_max=40.0), {"num_inference_steps": 300, "corrector": "none"}),
        (VPSDEScheduler(), {"num_inference_steps": 150, "corrector": "langevin"}),
        (VPSDEScheduler(), {"sampler": "ode", "solver": "dopri5"}),
        (VPSDEScheduler(), {"sampler": "ode", "num_inference_steps": 40}),  # the default exponential integrator
        (ScoreSdeDPMSolverMultistepScheduler(), {"sampler": "ode", "num_inference_steps": 40}),  # the same as a scheduler
    ],
    ids=["vp-reverse-diffusion", "ve-reverse-diffusion", "vp-pc-langevin", "vp-ode-dopri5", "vp-ode-unipc", "vp-ode-scheduler"],
)
def test_imputed_coordinates_follow_the_exact_conditional(scheduler, sampler_kwargs):
    pipe = mixture_pipeline(scheduler)
    image = torch.zeros(N, 3, dtype=torch.float64)
    image[:, 0] = Y
    image[:, 1:] = 123.0  # masked values are ignored
    out = pipe(image, mask_image=torch.tensor([0.0, 1.0, 1.0]), generator=torch.Generator().manual_seed(0), output_type="pt", **sampler_kwargs)
    x = out.images
    assert torch.equal(x[:, 0], image[:, 0]), "the known coordinate is the observation exactly"
    covariances = torch.diag_embed(torch.tensor(STDS, dtype=torch.float64) ** 2)
    pi, mu, cov = exact_conditional(WEIGHTS, MEANS, covariances, [0], torch.tensor([Y]))
    torch.testing.assert_close(pi, torch.tensor([0, 0, 0.35 / 0.6, 0.25 / 0.6], dtype=torch.float64), atol=1e-12, rtol=0)
    check_against_conditional(x[:, 1:], pi, mu, cov, f"{type(scheduler).__name__} {sampler_kwargs}")


def test_impute_is_the_forward_noised_observation_on_the_known_part():
    sde = VPSDEScheduler().sde
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    t, z = torch.full((5,), 0.3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    out = impute(x, y, mask, sde, t, z)
    mean, std = sde.marginal_prob(y, t)
    torch.testing.assert_close(out[:, [0, 2]], x[:, [0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(out[:, [1, 3]], (mean + std[:, None] * z)[:, [1, 3]])


# ---------------------------------------------------------------------------------------------- masks and images
def test_mask_conventions_pil_numpy_tensor():
    shape = (2, 3, 4, 4)
    white_left = np.zeros((4, 4), dtype=np.uint8)
    white_left[:, :2] = 255
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., :2] = 1
    for mask in (PIL.Image.fromarray(white_left), white_left, white_left[..., None], white_left.astype(np.float32) / 255, torch.from_numpy(white_left) / 255.0):
        assert torch.equal(prepare_mask(mask, shape), expected), type(mask)
    per_sample = prepare_mask([PIL.Image.fromarray(white_left), PIL.Image.fromarray(255 - white_left)], shape)
    assert per_sample.shape == (2, 1, 4, 4) and torch.equal(per_sample[1], 1 - expected[0])
    assert prepare_mask(torch.tensor([0.0, 1.0]), (3, 2)).tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize(
    "mask, shape",
    [(torch.ones(3, 3), (2, 1, 4, 4)), (torch.ones(3, 1, 4, 4), (2, 1, 4, 4)), (torch.ones(3), (2, 2)), (np.ones((5, 5)), (1, 3, 4, 4))],
)
def test_mask_shape_mismatch_is_a_clear_error(mask, shape):
    with pytest.raises(ValueError, match="does not match the image"):
        prepare_mask(mask, shape)


def test_bad_images_are_clear_errors():
    pipe = mixture_pipeline(VPSDEScheduler())
    with pytest.raises(ValueError, match="shape"):
        pipe(torch.zeros(2, 4), mask_image=torch.ones(4), num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="does not match"):
        pipe(torch.zeros(2, 3), mask_image=torch.ones(2), num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="mask_image"):
        pipe(torch.zeros(2, 3), num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="sampler"):
        pipe(torch.zeros(2, 3), mask_image=torch.ones(3), sampler="ddim", output_type="pt")


def test_image_inpainting_keeps_the_known_pixels_and_returns_pil():
    # A 4x4 one-channel mixture of two images (a bright left half or a bright right half); the last column is
    # repainted: the known pixels come back exactly, the repainted ones follow the image the known part shows,
    # and PIL in/out works. (Repainting 3 of 4 columns would not work reliably: the replacement method needs the
    # known part to tell the modes apart earlier than the unknown part does, see the pipeline docstring.)
    left = -torch.ones(1, 4, 4)
    left[..., :2] = 1
    right = left.flip(-1)
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.from_mixture([0.5, 0.5], torch.stack([left, right]).reshape(2, 16), [0.05, 0.05], scheduler=scheduler, sample_size=4, in_channels=1)
    pipe = ScoreSdeInpaintPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:, 3] = 255  # repaint the last column
    image = left[None].repeat(3, 1, 1, 1)
    out = pipe(image, mask_image=PIL.Image.fromarray(mask), num_inference_steps=100, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(out.images[..., :3], image[..., :3])
    torch.testing.assert_close(out.images, image, atol=0.3, rtol=0)  # the known columns say "left"
    as_pil = PIL.Image.fromarray(((left[0].numpy() + 1) * 127.5).astype(np.uint8))
    images = pipe(as_pil, mask_image=mask, num_inference_steps=20, output_type="pil").images
    assert isinstance(images[0], PIL.Image.Image) and images[0].size == (4, 4)
