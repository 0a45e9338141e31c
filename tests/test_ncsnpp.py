"""NCSNppModel and ScoreSdeDDPMModel behave as diffusers models, and the torch FIR resampling is StyleGAN2's.

Their exactness against score_sde_pytorch's networks is tests/test_conversion.py; here: serialisation, the call
interface (scalar or per-sample timesteps, other resolutions and channel counts), clear errors, and the
properties of the FIR ops that no released network exercises against the original (the fused upsampling
convolution).
"""

import pytest
import torch
import torch.nn.functional as F

from scoresde_diffusers.models import NCSNppModel, ScoreSdeDDPMModel
from scoresde_diffusers.models import upfirdn2d as fir

TINY_NCSNPP = dict(sample_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)
TINY_DDPM = dict(sample_size=8, nf=32, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def randomised(model):
    """Give every trained weight a random value: the initialisation leaves each block's last layer ~0."""
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():
        if p.requires_grad:
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return model.eval()


def test_save_and_load_round_trip_keeps_config_and_outputs(tmp_path):
    model = randomised(NCSNppModel(**TINY_NCSNPP, progressive="output_skip", progressive_input="input_skip"))
    model.save_pretrained(tmp_path)
    loaded = NCSNppModel.from_pretrained(tmp_path).eval()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert loaded.config.progressive == "output_skip"
    x, sigma = torch.rand(2, 3, 8, 8), torch.tensor([0.5, 3.0])
    torch.testing.assert_close(loaded(x, sigma).sample, model(x, sigma).sample, rtol=0, atol=0)


def test_state_dict_keeps_score_sde_key_layout():
    keys = NCSNppModel(**TINY_NCSNPP).state_dict().keys()
    assert {"sigmas", "all_modules.0.W", "all_modules.1.weight", "all_modules.3.weight"} <= set(keys)
    assert any(k.endswith("Conv2d_0.weight") for k in keys)  # FIR-conv pyramid downsampling


def test_fourier_frequencies_are_not_trained():
    model = NCSNppModel(**TINY_NCSNPP)
    assert model.all_modules[0].W.requires_grad is False


def test_scalar_timestep_is_used_for_every_sample():
    model = randomised(NCSNppModel(**TINY_NCSNPP))
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(model(x, 2.0).sample, model(x, torch.full((3,), 2.0)).sample)


def test_runs_at_other_resolutions_and_channel_counts():
    model = randomised(NCSNppModel(**TINY_NCSNPP, in_channels=1))
    assert model(torch.rand(2, 1, 16, 24), torch.tensor([1.0, 2.0])).sample.shape == (2, 1, 16, 24)
    ddpm = randomised(ScoreSdeDDPMModel(**TINY_DDPM, in_channels=1))
    assert ddpm(torch.rand(2, 1, 16, 16), torch.tensor([3.0, 700.0])).sample.shape == (2, 1, 16, 16)


def test_scale_by_sigma_divides_by_the_noise_level():
    model = randomised(NCSNppModel(**TINY_NCSNPP, embedding_type="positional", num_scales=10))
    unscaled = randomised(NCSNppModel(**TINY_NCSNPP, embedding_type="positional", num_scales=10, scale_by_sigma=False))
    x, index = torch.rand(2, 3, 8, 8), torch.tensor([0, 9])
    expected = unscaled(x, index).sample / model.sigmas[index].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(model(x, index).sample, expected)


@pytest.mark.parametrize("cls, tiny", [(NCSNppModel, TINY_NCSNPP), (ScoreSdeDDPMModel, TINY_DDPM)])
def test_fractional_noise_level_index_is_rounded_to_the_nearest_level(cls, tiny):
    kwargs = dict(tiny, scale_by_sigma=True, num_scales=10)
    if cls is NCSNppModel:
        kwargs["embedding_type"] = "positional"
    model = randomised(cls(**kwargs))
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(model(x, torch.tensor([2.4, 6.6])).sample, model(x, torch.tensor([2, 7])).sample)


def test_uncentered_model_maps_data_from_unit_interval():
    centered = randomised(NCSNppModel(**TINY_NCSNPP, centered=True))
    uncentered = randomised(NCSNppModel(**TINY_NCSNPP, centered=False))
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(uncentered(x, 1.0).sample, centered(2 * x - 1, 1.0).sample)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resblock_type": "resnet"}, "resblock_type must be one of 'ddpm', 'biggan'; got 'resnet'"),
        ({"progressive": "skip"}, "progressive must be one of 'none', 'output_skip', 'residual'"),
        ({"progressive_input": "skip"}, "progressive_input must be one of 'none', 'input_skip', 'residual'"),
        ({"embedding_type": "learned"}, "embedding_type must be one of 'fourier', 'positional'"),
        ({"nonlinearity": "gelu"}, "nonlinearity must be one of 'elu', 'relu', 'lrelu', 'swish'"),
        ({"nf": 6}, "nf must be a positive multiple of 4"),
    ],
)
def test_bad_config_names_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NCSNppModel(**{**TINY_NCSNPP, **kwargs})


def test_ddpm_widths_must_fit_32_groups():
    with pytest.raises(ValueError, match="multiple of 32"):
        ScoreSdeDDPMModel(**{**TINY_DDPM, "nf": 16})


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match=r"expects samples of shape \(B, 3, H, W\); got \(2, 1, 8, 8\)"):
        NCSNppModel(**TINY_NCSNPP)(torch.rand(2, 1, 8, 8), 1.0)


def test_fourier_model_refuses_non_positive_sigma():
    with pytest.raises(ValueError, match="must be > 0"):
        NCSNppModel(**TINY_NCSNPP)(torch.rand(2, 3, 8, 8), torch.tensor([0.0, 1.0]))


def test_noise_level_index_out_of_range_is_refused():
    model = NCSNppModel(**TINY_NCSNPP, embedding_type="positional", num_scales=10)
    with pytest.raises(ValueError, match=r"noise-level index in \[0, 9\]; got values in \[0, 10\]"):
        model(torch.rand(2, 3, 8, 8), torch.tensor([0, 10]))


def test_timestep_of_wrong_length_is_refused():
    with pytest.raises(ValueError, match=r"scalar or have shape \(2,\)"):
        NCSNppModel(**TINY_NCSNPP)(torch.rand(2, 3, 8, 8), torch.tensor([1.0, 2.0, 3.0]))


# ---------------------------------------------------------------------------------------------------- FIR ops
def test_fir_resampling_keeps_constant_images_constant_away_from_the_border():
    ones = torch.ones(1, 1, 8, 8)
    assert torch.equal(fir.upsample_2d(ones, (1, 3, 3, 1))[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))
    assert torch.equal(fir.downsample_2d(ones, (1, 3, 3, 1))[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))


def test_fused_upsample_conv_is_upsample_then_convolution_inside_the_image():
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    fused = fir.upsample_conv_2d(x, w, (1, 3, 3, 1))
    unfused = F.conv2d(fir.upsample_2d(x, (1, 3, 3, 1)), w, padding=1)
    assert fused.shape == unfused.shape == (2, 4, 12, 12)
    torch.testing.assert_close(fused[..., 2:-2, 2:-2], unfused[..., 2:-2, 2:-2], rtol=1e-5, atol=1e-5)


def test_fused_conv_downsample_is_convolution_then_downsample_inside_the_image():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    fused = fir.conv_downsample_2d(x, w, (1, 3, 3, 1))
    unfused = fir.downsample_2d(F.conv2d(x, w, padding=1), (1, 3, 3, 1))
    assert fused.shape == unfused.shape == (2, 4, 4, 4)
    torch.testing.assert_close(fused[..., 1:-1, 1:-1], unfused[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_fir_upsampling_residual_paths_run():
    """The FIR upsampling convolution (progressive='residual', ddpm blocks) that score_sde cannot run in torch."""
    model = randomised(NCSNppModel(**TINY_NCSNPP, resblock_type="ddpm", progressive="residual"))
    assert torch.isfinite(model(torch.rand(2, 3, 8, 8), torch.tensor([0.1, 5.0])).sample).all()
