"""Where each tensor of a vqtok VQGAN tokenizer lives in the checkpoints of other projects.

The VQGAN family shares one network (`vqtok.backbones.vqgan`) under several naming schemes: taming's
(also Chameleon's and transformers' `ChameleonVQVAE` / `JanusVQVAE`), LlamaGen's (Janus's own code
too) and diffusers'. A `NameScheme` says how one scheme names the parts; `tensor_names` lists, for a
backbone config, every vqtok tensor name with its name in the scheme; `infer_backbone` reads the
architecture back from a checkpoint's names and shapes, so a raw checkpoint needs no config file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..backbones.vqgan import VQGANBackboneConfig

CODEBOOK = "quantize.embedding.weight"
"""The codebook's name in every scheme: `[K, D]`."""

_RESIDUAL_PARTS = ("norm1", "conv1", "norm2", "conv2")
_ATTENTION_PARTS = ("norm", "q", "k", "v", "proj_out")


@dataclass(frozen=True)
class NameScheme:
    """How one project names the parts of the VQGAN encoder and decoder (`{i}` a level, `{j}` a block).

    Attributes:
        encoder_level / decoder_level: a level's stage, e.g. "encoder.down.{i}".
        decoder_levels_reversed: the decoder's stages are stored from the lowest resolution up
            (stage 0 = level L-1), not by level.
        block / attention: a residual block and its self-attention inside a stage.
        downsample / upsample: the resampling conv inside a stage.
        mid: the middle block's residual block, attention and residual block.
        norm_out: the GroupNorm before each half's `conv_out`.
        shortcut: a residual block's 1x1 projection where its widths differ.
        attention_parts: the names of an attention block's norm, q, k, v and output projection.
        linear_attention: q, k, v and the output are `nn.Linear` (`[C, C]`) rather than 1x1 convs.
    """

    name: str
    encoder_level: str
    decoder_level: str
    decoder_levels_reversed: bool
    block: str
    attention: str
    downsample: str
    upsample: str
    mid: tuple[str, str, str]
    norm_out: str = "norm_out"
    shortcut: str = "nin_shortcut"
    attention_parts: tuple[str, str, str, str, str] = _ATTENTION_PARTS
    linear_attention: bool = False


TAMING = NameScheme(
    "taming", encoder_level="encoder.down.{i}", decoder_level="decoder.up.{i}", decoder_levels_reversed=False,
    block="block.{j}", attention="attn.{j}", downsample="downsample.conv", upsample="upsample.conv",
    mid=("mid.block_1", "mid.attn_1", "mid.block_2"),
)
"""taming-transformers' VQGAN, Chameleon's `vqgan.ckpt` and transformers' `ChameleonVQVAE`."""

TRANSFORMERS_JANUS = NameScheme(
    "transformers-janus", encoder_level="encoder.down.{i}", decoder_level="decoder.up.{i}", decoder_levels_reversed=True,
    block="block.{j}", attention="attn.{j}", downsample="downsample.conv", upsample="upsample.conv",
    mid=("mid.block_1", "mid.attn_1", "mid.block_2"),
)
"""transformers' `JanusVQVAE` (taming's names, decoder stages from the lowest resolution up)."""

LLAMAGEN = NameScheme(
    "llamagen", encoder_level="encoder.conv_blocks.{i}", decoder_level="decoder.conv_blocks.{i}",
    decoder_levels_reversed=True, block="res.{j}", attention="attn.{j}", downsample="downsample.conv",
    upsample="upsample.conv", mid=("mid.0", "mid.1", "mid.2"),
)
"""LlamaGen's `tokenizer/tokenizer_image/vq_model.py` (and Janus's own `vq_model.py`)."""

DIFFUSERS = NameScheme(
    "diffusers", encoder_level="encoder.down_blocks.{i}", decoder_level="decoder.up_blocks.{i}",
    decoder_levels_reversed=True, block="resnets.{j}", attention="attentions.{j}",
    downsample="downsamplers.0.conv", upsample="upsamplers.0.conv",
    mid=("mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"),
    norm_out="conv_norm_out", shortcut="conv_shortcut",
    attention_parts=("group_norm", "to_q", "to_k", "to_v", "to_out.0"), linear_attention=True,
)
"""diffusers' `VQModel` (`Encoder` / `Decoder` with `DownEncoderBlock2D` / `UpDecoderBlock2D`)."""


@dataclass(frozen=True)
class TensorName:
    """One tensor: its vqtok name, its name in the source, and whether the source stores it as an
    `nn.Linear` weight `[C, C]` where vqtok has a 1x1 conv `[C, C, 1, 1]`."""

    vqtok: str
    source: str
    linear_to_conv: bool = False


def tensor_names(config: VQGANBackboneConfig, scheme: NameScheme, with_decoder: bool = True) -> list[TensorName]:
    """Every encoder (and decoder) tensor of a vqtok VQGAN backbone with its name in `scheme`; the
    quantizer's codebook is `CODEBOOK` in every scheme and is not listed."""
    names: list[TensorName] = []

    def add(vqtok: str, source: str, parts: tuple[str, ...] = ("",), source_parts: tuple[str, ...] | None = None,
            linear: bool = False) -> None:
        for part, source_part in zip(parts, source_parts or parts):
            for kind in ("weight", "bias"):
                names.append(TensorName(
                    ".".join(filter(None, (vqtok, part, kind))), ".".join(filter(None, (source, source_part, kind))),
                    linear and part not in ("", "norm"),
                ))

    def residual(vqtok: str, source: str, projects: bool) -> None:
        add(vqtok, source, _RESIDUAL_PARTS)
        if projects:
            add(f"{vqtok}.skip", f"{source}.{scheme.shortcut}")

    def attention(vqtok: str, source: str) -> None:
        add(vqtok, source, _ATTENTION_PARTS, scheme.attention_parts, linear=scheme.linear_attention)

    def middle(half: str) -> None:
        residual(f"{half}.mid.block_1", f"{half}.{scheme.mid[0]}", False)
        if config.mid_attention:
            attention(f"{half}.mid.attention", f"{half}.{scheme.mid[1]}")
        residual(f"{half}.mid.block_2", f"{half}.{scheme.mid[2]}", False)

    def level(half: str, level_index: int, in_width: int, blocks: int) -> None:
        stored = level_index
        if half == "decoder" and scheme.decoder_levels_reversed:
            stored = config.num_levels - 1 - level_index
        source = (scheme.encoder_level if half == "encoder" else scheme.decoder_level).format(i=stored)
        vqtok = f"{half}.{'down' if half == 'encoder' else 'up'}.{level_index}"
        width = config.level_widths[level_index]
        for block in range(blocks):
            residual(f"{vqtok}.blocks.{block}", f"{source}.{scheme.block.format(j=block)}", in_width != width)
            in_width = width
            if level_index in config.attention_levels:
                attention(f"{vqtok}.attentions.{block}", f"{source}.{scheme.attention.format(j=block)}")
        if half == "encoder" and level_index < config.num_levels - 1:
            add(f"{vqtok}.resample.conv", f"{source}.{scheme.downsample}")
        if half == "decoder" and level_index > 0:
            add(f"{vqtok}.resample.conv", f"{source}.{scheme.upsample}")

    widths = config.level_widths
    add("encoder.conv_in", "encoder.conv_in")
    for index in range(config.num_levels):
        level("encoder", index, ([config.base_channels] + widths)[index], config.num_res_blocks)
    middle("encoder")
    add("encoder.norm_out", f"encoder.{scheme.norm_out}")
    add("encoder.conv_out", "encoder.conv_out")
    add("encoder.quant_conv", "quant_conv")
    if with_decoder:
        add("decoder.post_quant_conv", "post_quant_conv")
        add("decoder.conv_in", "decoder.conv_in")
        middle("decoder")
        for index in reversed(range(config.num_levels)):
            level("decoder", index, (widths + [widths[-1]])[index + 1], config.num_res_blocks + 1)
        add("decoder.norm_out", f"decoder.{scheme.norm_out}")
        add("decoder.conv_out", "decoder.conv_out")
    return names


def infer_backbone(state: Mapping[str, torch.Tensor], scheme: NameScheme, norm_groups: int = 32) -> VQGANBackboneConfig:
    """The VQGAN backbone a checkpoint in `scheme`'s names holds, read from its tensor names and
    shapes: the widths, the levels, the blocks per level, where attention is and `z_channels`.
    `norm_groups` cannot be read from tensors (32 in every reference). Raises `ValueError` naming
    the tensor that is missing."""

    def shape(name: str) -> torch.Size:
        if name not in state:
            raise ValueError(f"the checkpoint has no tensor {name!r}, which a {scheme.name} VQGAN encoder needs")
        return state[name].shape

    level_pattern = re.compile(re.escape(scheme.encoder_level).replace(r"\{i\}", r"(\d+)") + r"\.(.+)")
    level_keys: dict[int, list[str]] = {}
    for name in state:
        match = level_pattern.fullmatch(name)
        if match:
            level_keys.setdefault(int(match.group(1)), []).append(match.group(2))
    if not level_keys:
        raise ValueError(
            f"the checkpoint has no encoder stages named like {scheme.encoder_level!r}: it is not a {scheme.name} VQGAN "
            f"checkpoint (first names: {sorted(state)[:5]})"
        )
    num_levels = max(level_keys) + 1
    block_prefix = scheme.block.split("{j}")[0]
    attention_prefix = scheme.attention.split("{j}")[0]
    num_blocks = len({key[len(block_prefix):].split(".")[0] for key in level_keys.get(0, []) if key.startswith(block_prefix)})
    base_channels = shape("encoder.conv_in.weight")[0]
    first_block = f"{scheme.encoder_level}.{scheme.block}"
    widths = [shape(f"{first_block.format(i=i, j=0)}.conv1.weight")[0] for i in range(num_levels)]
    if any(width % base_channels for width in widths):
        raise ValueError(f"the encoder's level widths {widths} are not multiples of its first width {base_channels}")
    mid_attention_norm = f"encoder.{scheme.mid[1]}.{scheme.attention_parts[0]}.weight"
    return VQGANBackboneConfig(
        base_channels=base_channels,
        channel_multipliers=[width // base_channels for width in widths],
        num_res_blocks=num_blocks,
        attention_levels=[i for i in range(num_levels) if any(k.startswith(attention_prefix) for k in level_keys.get(i, []))],
        mid_attention=mid_attention_norm in state,
        z_channels=shape("encoder.conv_out.weight")[0],
        norm_groups=norm_groups,
    )
