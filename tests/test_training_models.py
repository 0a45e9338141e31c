"""UNet presets (NCSN++ / DDPM++) and the MLP score model."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from scoresde_diffusers.models.mlp import MLPScoreModel
from scoresde_diffusers.models.unet_presets import MODEL_PRESETS, create_unet

TINY = dict(width=16, layers_per_block=1, dropout=0.0)


@pytest.mark.parametrize("preset", ["ncsnpp", "ddpmpp"])
@pytest.mark.parametrize("channels,resolution", [(1, 8), (3, 8), (1, 16)])
def test_presets_forward_any_channels(preset, channels, resolution):
    unet = create_unet(preset, resolution=resolution, in_channels=channels, **TINY)
    x = torch.randn(2, channels, resolution, resolution)
    timestep = torch.tensor([0.05, 3.0]) if preset == "ncsnpp" else torch.tensor([10.0, 900.0])
    out = unet(x, timestep).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not any("Skip" in b for b in unet.config.down_block_types + unet.config.up_block_types)
    if resolution == 16:
        assert unet.config.down_block_types[0] == "AttnDownBlock2D"  # attention at 16x16, as NCSN++ / DDPM++


def test_ncsnpp_is_fourier_and_scales_by_sigma():
    """NCSN++: Gaussian Fourier embedding of log sigma, output divided by sigma (the score parametrisation)."""
    unet = create_unet("ncsnpp", resolution=8, in_channels=1, **TINY)
    assert unet.config.time_embedding_type == "fourier"
    body = {}
    unet.conv_out.register_forward_hook(lambda module, args, output: body.__setitem__("out", output))
    x = torch.randn(2, 1, 8, 8)
    sigma = torch.tensor([0.05, 4.0])
    with torch.no_grad():
        out = unet(x, sigma).sample
    torch.testing.assert_close(out * sigma[:, None, None, None], body["out"])
    ddpm = create_unet("ddpmpp", resolution=8, in_channels=1, **TINY)
    assert ddpm.config.time_embedding_type == "positional"


def test_bad_resolution_and_unknown_preset():
    with pytest.raises(ValueError, match="Resolution 10 cannot be halved 2 times"):
        create_unet("ddpmpp", resolution=10, in_channels=1, channel_mult=(1, 2, 2), **TINY)
    with pytest.raises(ValueError, match="resolution >= 4"):
        create_unet("ddpmpp", resolution=2, in_channels=1, **TINY)
    with pytest.raises(ValueError, match="Unknown model preset 'unet9'.*ddpmpp.*ncsnpp"):
        create_unet("unet9", resolution=8, in_channels=1)
    assert {"ncsnpp", "ddpmpp"} <= set(MODEL_PRESETS.names())


def test_config_file(tmp_path):
    config = UNet2DModel(**{**MODEL_PRESETS.get("ddpmpp")(8, in_channels=1, **TINY)}).config
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(config)))
    unet = create_unet(resolution=8, in_channels=1, config_file=str(path))
    assert list(unet.config.block_out_channels) == list(config.block_out_channels)
    with pytest.raises(ValueError, match="sample_size 8 does not match the data resolution 16"):
        create_unet(resolution=16, in_channels=1, config_file=str(path))
    with pytest.raises(ValueError, match="in_channels 1 does not match the data's 3 channels"):
        create_unet(resolution=8, in_channels=3, config_file=str(path))
    with pytest.raises(ValueError, match="does not exist"):
        create_unet(resolution=8, in_channels=1, config_file=str(tmp_path / "missing.json"))


@pytest.mark.parametrize("embedding", ["positional", "fourier"])
def test_mlp_forward_and_round_trip(tmp_path, embedding):
    model = MLPScoreModel(dim=3, hidden_dim=32, num_layers=2, time_embedding_type=embedding)
    with torch.no_grad():
        for p in model.output.parameters():
            p.normal_()  # the output layer starts at zero; make it non-trivial
    x = torch.randn(5, 3)
    t = torch.rand(5) + 0.1
    out = model(x, t).sample
    assert out.shape == (5, 3)
    torch.testing.assert_close(model(x, t[:1]).sample[:1], model(x[:1], float(t[0])).sample)  # scalar timestep broadcasts
    model.save_pretrained(tmp_path / "mlp")
    loaded = MLPScoreModel.from_pretrained(tmp_path / "mlp")
    torch.testing.assert_close(loaded(x, t).sample, out)
    assert loaded.config.dim == 3
    with pytest.raises(ValueError, match=r"expects samples of shape \(B, 3\)"):
        model(torch.randn(5, 2), t)
    with pytest.raises(ValueError, match="time_embedding_type"):
        MLPScoreModel(time_embedding_type="learned")
