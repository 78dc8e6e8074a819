"""The VQGAN backbone (`backbone_type="vqgan"`): its shapes at every downsampling factor, the
references' asymmetric padding and single-head attention checked by hand, its config checks. Its
equality with the reference implementations is proven in `test_convert_checkpoint.py`; every
tokenizer type runs on it in `test_contract.py`."""

import pytest
import torch

from vqtok import VQConfig, VQTokenizer
from vqtok.backbones import VQGANBackboneConfig, build_backbone_config
from vqtok.backbones.vqgan import AsymmetricDownsample, SelfAttention

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**fields) -> VQGANBackboneConfig:
    return VQGANBackboneConfig(**{"base_channels": 4, "num_res_blocks": 1, "norm_groups": 2, "z_channels": 4, **fields})


@pytest.mark.parametrize("levels", [2, 3, 4, 5, 6])
def test_each_level_halves_the_side_up_to_f_32(levels):
    config = tiny(channel_multipliers=[1] * levels)
    factor = 2 ** (levels - 1)
    assert config.downsampling_factor == factor and config.attention_levels == [levels - 1]
    encoder, decoder = config.build_encoder(3, 5), config.build_decoder(5, 3)
    latents = encoder(torch.randn(1, 3, 64, 32))
    assert latents.shape == (1, 5, 64 // factor, 32 // factor)
    assert decoder(latents).shape == (1, 3, 64, 32)
    assert type(decoder).__name__ == "VQGANDecoder" and decoder.conv_out.out_channels == 3


def test_the_defaults_are_llamagen_16():
    config = VQGANBackboneConfig()
    assert (config.base_channels, config.channel_multipliers, config.num_res_blocks) == (128, [1, 1, 2, 2, 4], 2)
    assert config.downsampling_factor == 16 and config.attention_levels == [4] and config.z_channels == 256


def test_downsampling_pads_the_right_and_bottom_only():
    """A 3x3 all-ones kernel over ones, 4x4 -> 2x2: the top-left window lies inside the image (sum 9),
    the bottom-right one overlaps the padded row and column (sum 4). Symmetric padding gives the reverse."""
    downsample = AsymmetricDownsample(1)
    with torch.no_grad():
        downsample.conv.weight.fill_(1.0)
        downsample.conv.bias.zero_()
    out = downsample(torch.ones(1, 1, 4, 4))
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


def test_attention_is_one_head_softmax_over_all_positions():
    torch.manual_seed(0)
    attention = SelfAttention(4, groups=2).eval()
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        h = attention.norm(x)
        q, k, v = (conv(h).flatten(2) for conv in (attention.q, attention.k, attention.v))  # [B, C, N]
        weights = torch.softmax(q.transpose(1, 2) @ k / 2.0, dim=-1)  # sqrt(C) = 2
        expected = x + attention.proj_out((v @ weights.transpose(1, 2)).reshape(2, 4, 3, 5))
        assert torch.allclose(attention(x), expected, atol=1e-6)


def test_attention_sits_where_the_config_puts_it():
    config = tiny(channel_multipliers=[1, 2, 2], attention_levels=[0, 2], mid_attention=False, num_res_blocks=2)
    encoder, decoder = config.build_encoder(3, 4), config.build_decoder(4, 3)
    assert [len(level.attentions) for level in encoder.down] == [2, 0, 2]
    assert [len(level.attentions) for level in decoder.up] == [3, 0, 3]
    assert isinstance(encoder.mid.attention, torch.nn.Identity)
    assert not hasattr(encoder.down[2], "resample") and not hasattr(decoder.up[0], "resample")


@pytest.mark.parametrize("fields, message", [
    (dict(channel_multipliers=[1]), "between 2 and 6 entries"),
    (dict(channel_multipliers=[1] * 7), "between 2 and 6 entries"),
    (dict(channel_multipliers=[1, 0]), r"`channel_multipliers\[i\]` must lie in"),
    (dict(channel_multipliers=[1, 2], attention_levels=[2]), r"`attention_levels\[i\]` must lie in \[0, 1\]"),
    (dict(z_channels=0), "`z_channels` must lie in"),
])
def test_bad_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny(**fields)


def test_unknown_fields_are_named_and_the_config_round_trips(tmp_path):
    with pytest.raises(ValueError, match=r"unknown backbone_config field\(s\) \['ch_mult'\].*vqgan"):
        build_backbone_config({"backbone_type": "vqgan", "ch_mult": [1, 2]})
    backbone = dict(backbone_type="vqgan", base_channels=8, channel_multipliers=[1, 2, 2], num_res_blocks=1, norm_groups=4,
                    z_channels=8, attention_levels=[], mid_attention=False, gradient_checkpointing=True)
    tokenizer = VQTokenizer.from_config(VQConfig(image_size=16, latent_dim=4, codebook_size=8, backbone_config=backbone))
    tokenizer.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert loaded.config.backbone_config.to_dict() == backbone
    assert loaded.config.token_grid == (4, 4)
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(pixels), tokenizer.encode(pixels))
    with pytest.raises(ValueError, match="multiple of"):
        VQConfig(image_size=18, latent_dim=4, codebook_size=8, backbone_config=backbone)
