"""Pretrained tokenizers of other projects, imported into vqtok (`vqtok.conversion`), proven equal to
their reference implementations offline.

For each source with a reference class in transformers or diffusers, a small randomly initialised
reference model is converted through the public API; on 32 random images the vqtok tokenizer gives
the reference's ids exactly and decodes within 1e-4 of the reference's decode (which vqtok clamps to
[-1, 1], its image range). LlamaGen's and taming's raw formats are written from a reference
architecture under the source's own tensor names (renamed here by hand, independently of vqtok's
mapping) and converted from the file. For the real configurations (LlamaGen-16 / Janus, Chameleon
8192 x 256, taming f16-16384) the reference is built on the meta device and every tensor maps.
"""

import argparse
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import VQModel as DiffusersVQModel
from transformers import ChameleonVQVAE, ChameleonVQVAEConfig, JanusVQVAE, JanusVQVAEConfig

from vqtok import VQTokenizer
from vqtok.conversion import convert_checkpoint, convert_state_dict, converted_config
from vqtok.conversion.layout import DIFFUSERS, LLAMAGEN, TAMING, TRANSFORMERS_JANUS, infer_backbone
from vqtok.conversion.sources import SourceCheckpoint
from vqtok.models.vq import VQModel

from test_hub import _Trap

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGES = 32
SIDE = 32


def images(side: int = SIDE) -> torch.Tensor:
    return torch.rand(IMAGES, 3, side, side, generator=torch.Generator().manual_seed(7)) * 2 - 1


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights further from the default initialisation (norms and biases away from 1 and 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def tiny_janus(unit_codes: bool = True) -> JanusVQVAE:
    """LlamaGen-16's architecture at f = 2 (attention at the last level), K = 64, D = 8."""
    torch.manual_seed(0)
    config = JanusVQVAEConfig(base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1, latent_channels=32,
                              embed_dim=8, num_embeddings=64, num_patches=SIDE // 2)
    model = perturbed(JanusVQVAE(config))
    codes = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(F.normalize(codes, dim=1) if unit_codes else codes * 3)
    return model


def tiny_diffusers() -> DiffusersVQModel:
    """A taming / LDM VQModel at f = 4 with a middle attention, K = 64, D = 4."""
    torch.manual_seed(0)
    model = DiffusersVQModel(
        block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=16, vq_embed_dim=4,
        num_vq_embeddings=64, norm_num_groups=32, sample_size=SIDE,
    )
    return perturbed(model)


def assert_same_tokens_and_pictures(tokenizer, reference_ids: torch.Tensor, reference_decode) -> None:
    pixels = images()
    ids = tokenizer.encode(pixels)
    assert ids.shape == reference_ids.shape
    assert torch.equal(ids, reference_ids), f"{(ids != reference_ids).sum().item()} of {ids.numel()} ids differ"
    assert ids.unique().numel() > 8  # the comparison is not between constant grids
    with torch.no_grad():
        expected = reference_decode(ids).clamp(-1, 1)
    assert (tokenizer.decode(ids) - expected).abs().max().item() < 1e-4


# --- equality with the reference classes ---------------------------------------------------------
def janus_reference_ids(reference: JanusVQVAE) -> torch.Tensor:
    with torch.no_grad():
        return reference.encode(images()).image_tokens.view(IMAGES, SIDE // 2, SIDE // 2)


def janus_reference_decode(reference: JanusVQVAE):
    return lambda ids: reference.decode(ids.reshape(ids.shape[0], -1))


def test_janus_from_transformers_gives_the_reference_ids_and_pictures(tmp_path):
    reference = tiny_janus()
    reference.save_pretrained(tmp_path / "janus")
    tokenizer = convert_checkpoint("janus", tmp_path / "janus", tmp_path / "converted")

    assert tokenizer.config.use_cosine and tokenizer.config.backbone_config.backbone_type == "vqgan"
    assert_same_tokens_and_pictures(tokenizer, janus_reference_ids(reference), janus_reference_decode(reference))
    reloaded = VQTokenizer.from_pretrained(tmp_path / "converted")
    assert torch.equal(reloaded.encode(images()), tokenizer.encode(images()))


def test_janus_ids_follow_janus_own_code_where_codes_are_not_unit_length(tmp_path):
    """Janus's (LlamaGen's) code l2-normalises latents and codes before the search; transformers'
    `JanusVQVAE.encode` does not. vqtok follows the original code, written out here."""
    reference = tiny_janus(unit_codes=False)
    reference.save_pretrained(tmp_path / "janus")
    tokenizer = convert_checkpoint("janus", tmp_path / "janus")
    with torch.no_grad():
        latents = reference.quant_conv(reference.encoder(images())).permute(0, 2, 3, 1)
        cosine = F.normalize(latents, dim=-1) @ F.normalize(reference.quantize.embedding.weight, dim=-1).T
    assert torch.equal(tokenizer.encode(images()), cosine.argmax(dim=-1))


def llamagen_names(state: dict) -> dict:
    """transformers' JanusVQVAE tensor names -> LlamaGen's `vq_model.py` names (both keep the decoder's
    stages from the lowest resolution up)."""
    renamed = {}
    for name, tensor in state.items():
        name = re.sub(r"^(encoder|decoder)\.(down|up)\.", r"\1.conv_blocks.", name)
        name = re.sub(r"\.block\.(\d+)\.", r".res.\1.", name)
        name = name.replace(".mid.block_1.", ".mid.0.").replace(".mid.attn_1.", ".mid.1.").replace(".mid.block_2.", ".mid.2.")
        renamed[name] = tensor
    return renamed


def test_llamagen_pt_file_gives_the_reference_ids_and_pictures(tmp_path):
    reference = tiny_janus()
    state = llamagen_names(reference.state_dict())
    state["quantize.codebook_used"] = torch.zeros(65536)
    torch.save({"model": state, "steps": 1000, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "vq_ds2.pt")

    tokenizer = convert_checkpoint("llamagen", tmp_path / "vq_ds2.pt", tmp_path / "converted", image_size=SIDE)
    assert_same_tokens_and_pictures(tokenizer, janus_reference_ids(reference), janus_reference_decode(reference))
    card = (tmp_path / "converted" / "README.md").read_text()
    assert "license: mit" in card and "LlamaGen" in card and "sun2024autoregressive" in card


def diffusers_ids(reference: DiffusersVQModel) -> torch.Tensor:
    with torch.no_grad():
        latents = reference.encode(images()).latents
        return reference.quantize(latents)[2][2].view(IMAGES, SIDE // 4, SIDE // 4)


def diffusers_decode(reference: DiffusersVQModel):
    def decode(ids: torch.Tensor) -> torch.Tensor:
        codes = reference.quantize.get_codebook_entry(ids.reshape(-1), (ids.shape[0], *ids.shape[1:], 4))
        return reference.decode(codes, force_not_quantize=True).sample

    return decode


def test_diffusers_vqmodel_gives_the_reference_ids_and_pictures(tmp_path):
    reference = tiny_diffusers()
    reference.save_pretrained(tmp_path / "vqvae")
    tokenizer = convert_checkpoint("diffusers", tmp_path, tmp_path / "converted", subfolder="vqvae")
    assert tokenizer.config.downsampling_factor == 4 and tokenizer.config.backbone_config.attention_levels == []
    assert_same_tokens_and_pictures(tokenizer, diffusers_ids(reference), diffusers_decode(reference))
    processor = json.loads((tmp_path / "converted" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": SIDE, "width": SIDE} and processor["image_mean"] == [0.5] * 3


def taming_names(state: dict, num_levels: int) -> dict:
    """diffusers VQModel tensor names -> taming-transformers' (`up.i` is level i; 1x1 convs for q, k, v)."""
    renamed = {}
    for name, tensor in state.items():
        name = re.sub(r"^encoder\.down_blocks\.(\d+)\.", r"encoder.down.\1.", name)
        name = re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{num_levels - 1 - int(m.group(1))}.", name)
        name = name.replace(".resnets.", ".block.").replace("conv_shortcut", "nin_shortcut")
        name = name.replace("downsamplers.0.", "downsample.").replace("upsamplers.0.", "upsample.")
        name = name.replace("mid_block.block.0.", "mid.block_1.").replace("mid_block.block.1.", "mid.block_2.")
        name = name.replace("mid_block.attentions.0.", "mid.attn_1.").replace("conv_norm_out", "norm_out")
        for old, new in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            name = name.replace(f"attn_1.{old}.", f"attn_1.{new}.")
        if re.search(r"attn_1\.(q|k|v|proj_out)\.weight$", name):
            tensor = tensor[:, :, None, None]
        renamed[name] = tensor
    return renamed


def write_taming_ckpt(path, reference: DiffusersVQModel) -> None:
    state = taming_names(reference.state_dict(), num_levels=3)
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    torch.save({"state_dict": state, "global_step": 3, "epoch": 1}, path)


def test_taming_ckpt_gives_the_reference_ids_and_pictures(tmp_path):
    reference = tiny_diffusers()
    write_taming_ckpt(tmp_path / "last.ckpt", reference)
    tokenizer = convert_checkpoint("taming", tmp_path / "last.ckpt", tmp_path / "converted", image_size=SIDE)
    assert_same_tokens_and_pictures(tokenizer, diffusers_ids(reference), diffusers_decode(reference))
    assert "legacy=True" in tokenizer.config.training_metadata["converted_from"]["beta_convention"]


def tiny_chameleon() -> ChameleonVQVAE:
    torch.manual_seed(0)
    config = ChameleonVQVAEConfig(base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1, latent_channels=32,
                                  embed_dim=8, num_embeddings=64, resolution=SIDE, attn_resolutions=[SIDE // 2])
    return perturbed(ChameleonVQVAE(config))


def test_chameleon_from_transformers_encodes_like_the_reference_and_cannot_decode(tmp_path):
    reference = tiny_chameleon()
    reference.save_pretrained(tmp_path / "chameleon")
    tokenizer = convert_checkpoint("chameleon", tmp_path / "chameleon", tmp_path / "converted")

    with torch.no_grad():
        expected = reference.encode(images()).image_tokens.view(IMAGES, SIDE // 2, SIDE // 2)
    assert torch.equal(tokenizer.encode(images()), expected)
    assert tokenizer.config.backbone_config.attention_levels == [1] and not tokenizer.config.has_decoder
    reloaded = VQTokenizer.from_pretrained(tmp_path / "converted")
    assert torch.equal(reloaded.encode(images()), expected)
    assert not any(name.startswith("decoder.") for name in reloaded.state_dict())
    with pytest.raises(RuntimeError, match="has no decoder.*encoder-only checkpoint"):
        reloaded.decode(expected)
    processor = json.loads((tmp_path / "converted" / "preprocessor_config.json").read_text())
    assert processor["rescale_factor"] == 0.0078 and processor["image_mean"] == [1.0] * 3 and processor["resample"] == 1
    assert "license: other" in (tmp_path / "converted" / "README.md").read_text()


def test_chameleon_inside_a_full_model_checkpoint_is_found_by_its_prefix(tmp_path):
    reference = tiny_chameleon()
    reference.save_pretrained(tmp_path / "vq")
    config = json.loads((tmp_path / "vq" / "config.json").read_text())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text(json.dumps({"model_type": "chameleon", "vq_config": config}))
    from safetensors.torch import save_file

    tensors = {f"model.vqmodel.{name}": t.contiguous() for name, t in reference.state_dict().items()}
    tensors["model.embed_tokens.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(tmp_path / "full" / "model.safetensors"))
    tokenizer = convert_checkpoint("chameleon", tmp_path / "full")
    with torch.no_grad():
        expected = reference.encode(images()).image_tokens.view(IMAGES, SIDE // 2, SIDE // 2)
    assert torch.equal(tokenizer.encode(images()), expected)


def test_janus_from_the_local_hub_server(local_hub, tmp_path):
    from huggingface_hub import HfApi

    reference = tiny_janus()
    reference.save_pretrained(tmp_path / "janus")
    HfApi().create_repo("user/janus-tiny")
    HfApi().upload_folder(repo_id="user/janus-tiny", folder_path=tmp_path / "janus")
    tokenizer = convert_checkpoint("janus", "user/janus-tiny", tmp_path / "converted")
    assert torch.equal(tokenizer.encode(images()), janus_reference_ids(reference))
    assert local_hub.unknown_requests == []


def test_a_converted_tokenizer_tokenizes_a_dataset_and_publishes_with_the_source_card(local_hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from tiny_data import tiny_images

    from vqtok import TokenLayout, tokenize_dataset
    from vqtok.tokens.tokenization import load_tokenizer_and_processor

    tiny_janus().save_pretrained(tmp_path / "janus")
    convert_checkpoint("janus", tmp_path / "janus", tmp_path / "converted")
    tokenizer, processor = load_tokenizer_and_processor(str(tmp_path / "converted"))
    rows = tokenize_dataset(tiny_images(count=6, width=40, height=36), tokenizer, processor=processor, batch_size=4)
    layout = TokenLayout.for_tokenizer(tokenizer)
    assert len(rows) == 6 and len(rows[0]["input_ids"]) == layout.sequence_length == (SIDE // 2) ** 2
    expected = tokenizer.encode(processor(list(tiny_images(count=6, width=40, height=36)["image"]), return_tensors="pt")["pixel_values"])
    assert torch.equal(torch.tensor(rows["input_ids"]), expected.reshape(6, -1))

    tokenizer.push_to_hub("user/janus-vq")
    card = open(hf_hub_download("user/janus-vq", "README.md")).read()
    assert "license: other" in card and "## Source" in card and "DeepSeek Model License" in card
    assert "@article{wu2024janus" in card and "@article{sun2024autoregressive" in card
    assert torch.equal(VQTokenizer.from_pretrained("user/janus-vq").encode(images()), tokenizer.encode(images()))
    assert set(HfApi().list_repo_files("user/janus-vq")) >= {"config.json", "model.safetensors", "README.md"}


# --- the real configurations, on the meta device ----------------------------------------------------
def assert_every_tensor_maps(tensors: dict, scheme, expected_backbone: dict, **read) -> None:
    """Convert the names and shapes of a reference built on the meta device: every source tensor is
    used, and every vqtok tensor gets one of the shape the vqtok model has."""
    backbone = infer_backbone(tensors, scheme)
    assert {k: v for k, v in backbone.to_dict().items() if k in expected_backbone} == expected_backbone
    checkpoint = SourceCheckpoint("taming", tensors, scheme, backbone, image_size=256, **read)
    config = converted_config(checkpoint)
    state = convert_state_dict(checkpoint, config)
    with torch.device("meta"):
        model = VQModel(config)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items() if name != "quantizer.codebook.usage"}
    assert {name: tensor.shape for name, tensor in state.items()} == expected


def test_llamagen_16_and_janus_real_configuration_maps_every_tensor():
    with torch.device("meta"):
        reference = JanusVQVAE(JanusVQVAEConfig())  # K = 16384, D = 8, ch_mult 1, 1, 2, 2, 4
    expected = dict(base_channels=128, channel_multipliers=[1, 1, 2, 2, 4], num_res_blocks=2, attention_levels=[4],
                    mid_attention=True, z_channels=256)
    assert_every_tensor_maps(reference.state_dict(), TRANSFORMERS_JANUS, expected, l2_normalized_codes=True)
    assert_every_tensor_maps(llamagen_names(reference.state_dict()), LLAMAGEN, expected, l2_normalized_codes=True)


def test_chameleon_real_configuration_maps_every_tensor():
    with torch.device("meta"):
        reference = ChameleonVQVAE(ChameleonVQVAEConfig())  # K = 8192, D = 256, 512 px
    assert reference.quantize.embedding.weight.shape == (8192, 256)
    assert_every_tensor_maps(reference.state_dict(), TAMING, dict(channel_multipliers=[1, 1, 2, 2, 4], attention_levels=[]))


def test_taming_f16_16384_real_configuration_maps_every_tensor():
    """taming's f16 VQGAN (ch 128, ch_mult 1,1,2,2,4, 2 blocks, attention at 16 px of 256, K = 16384,
    D = 256): the encoder of transformers' ChameleonVQVAE and the decoder of its JanusVQVAE are
    taming's modules under taming's names (Janus's decoder stages renumbered to taming's by level)."""
    with torch.device("meta"):
        encoder = ChameleonVQVAE(ChameleonVQVAEConfig(resolution=256, attn_resolutions=[16], num_embeddings=16384))
        decoder = JanusVQVAE(JanusVQVAEConfig(embed_dim=256, num_embeddings=16384))
    tensors = dict(encoder.state_dict())
    for name, tensor in decoder.state_dict().items():
        if name.startswith("decoder."):
            tensors[re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.up.{4 - int(m.group(1))}.", name)] = tensor
    expected = dict(channel_multipliers=[1, 1, 2, 2, 4], num_res_blocks=2, attention_levels=[4], z_channels=256)
    assert_every_tensor_maps(tensors, TAMING, expected)


def test_diffusers_scheme_maps_every_tensor_at_f8():
    with torch.device("meta"):
        reference = DiffusersVQModel(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                                     num_vq_embeddings=16384)
    assert_every_tensor_maps(reference.state_dict(), DIFFUSERS, dict(channel_multipliers=[1, 2, 4, 4], attention_levels=[]))


# --- bad checkpoints ---------------------------------------------------------------------------------
def test_a_file_that_needs_unpickling_is_refused_without_running_it(tmp_path):
    reference = tiny_janus()
    marker = tmp_path / "UNPICKLED"
    payload = {"model": llamagen_names(reference.state_dict()), "args": argparse.Namespace(lr=1e-4), "trap": _Trap(marker)}
    torch.save(payload, tmp_path / "vq.pt")
    with pytest.raises(ValueError, match="refuses to unpickle.*weights_only=True"):
        convert_checkpoint("llamagen", tmp_path / "vq.pt")
    assert not marker.exists()


def test_missing_unexpected_and_misshapen_tensors_are_named(tmp_path):
    state = llamagen_names(tiny_janus().state_dict())
    for name, change, message in (
        ("decoder.conv_out.bias", "drop", "missing tensor.*decoder.conv_out.bias"),
        ("encoder.extra.weight", "add", "unexpected tensor.*encoder.extra.weight"),
        ("decoder.conv_blocks.1.res.0.conv2.weight", "shrink", "decoder.up.0.blocks.0.conv2.weight.*shape \\[32, 32, 3, 2\\]"),
        ("encoder.conv_out.bias", "nan", "encoder.conv_out.bias.*NaN"),
    ):
        broken = dict(state)
        if change == "drop":
            del broken[name]
        elif change == "add":
            broken[name] = torch.zeros(3)
        elif change == "shrink":
            broken[name] = broken[name][..., :2]
        else:
            broken[name] = torch.full_like(broken[name], float("nan"))
        torch.save({"model": broken}, tmp_path / "vq.pt")
        with pytest.raises(ValueError, match=message):
            convert_checkpoint("llamagen", tmp_path / "vq.pt")


def test_bad_sources_paths_and_files_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'vqgan'.*janus"):
        convert_checkpoint("vqgan", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_checkpoint("taming", tmp_path / "nope" / "last.ckpt")
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.ckpt is not a readable PyTorch checkpoint"):
        convert_checkpoint("taming", tmp_path / "corrupt.ckpt")
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "novq.ckpt")
    with pytest.raises(ValueError, match="no VQ codebook"):
        convert_checkpoint("taming", tmp_path / "novq.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        convert_checkpoint("diffusers", tmp_path / "empty")


def test_diffusers_architectures_vqtok_cannot_reproduce_are_refused(tmp_path):
    tiny_diffusers().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "norm_type": "spatial"}))
    with pytest.raises(ValueError, match="norm_type.*spatial"):
        convert_checkpoint("diffusers", tmp_path)


# --- the command ------------------------------------------------------------------------------------
def load_command():
    import vqtok.commands.convert

    return vqtok.commands.convert


def test_the_command_converts_and_reports(tmp_path, capsys):
    command = load_command()
    write_taming_ckpt(tmp_path / "last.ckpt", tiny_diffusers())
    command.main(["--source", "taming", "--input", str(tmp_path / "last.ckpt"), "--output", str(tmp_path / "out"),
                  "--image_size", "32", "--license", "cc-by-4.0"])
    assert "K = 64, D = 4, f = 4, 8x8 tokens per 32 px image" in capsys.readouterr().out
    assert "license: cc-by-4.0" in (tmp_path / "out" / "README.md").read_text()
    assert VQTokenizer.from_pretrained(tmp_path / "out").config.image_size == 32
    with pytest.raises(SystemExit, match="does not exist"):
        command.main(["--source", "taming", "--input", str(tmp_path / "missing.ckpt"), "--output", str(tmp_path / "x")])
