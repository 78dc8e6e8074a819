"""The five sources vqtok imports tokenizers from, each read into a `SourceCheckpoint`: the tensors
(under the source's own names, any wrapping prefix removed), the naming scheme, the image side and
what the source's code does that the vqtok config must reproduce (l2-normalised codes, its β).

- janus:     transformers' `JanusVQVAE` (a `janus` or `janus_vqgan` folder or Hub repo), or a
             LlamaGen-format `.pt` from Janus's own code.
- llamagen:  LlamaGen's `.pt` (its `model` state dict).
- chameleon: transformers' `ChameleonVQVAE` (encoder only: transformers has no decoder), or Meta's
             taming-format `vqgan.ckpt`, which has the decoder.
- taming:    a taming-transformers VQGAN Lightning `.ckpt` (`VectorQuantizer2`).
- diffusers: a diffusers `VQModel` folder or Hub repo (`--subfolder vqvae` inside a pipeline).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..backbones.vqgan import VQGANBackboneConfig
from .files import CheckpointFile, read_torch_checkpoint, state_dict_of
from .layout import CODEBOOK, DIFFUSERS, LLAMAGEN, TAMING, TRANSFORMERS_JANUS, NameScheme, infer_backbone

# The tensors of each scheme that only training used, dropped with the reason recorded.
TRAINING_ONLY = {
    "loss.": "taming's training loss (discriminator and LPIPS network)",
    "quantize.codebook_used": "LlamaGen's record of recently used codes",
}


@dataclass
class SourceCheckpoint:
    """One source checkpoint as read, before conversion.

    Attributes:
        source: the source's name (`vqtok.hub.references.SOURCE_PROJECTS`).
        tensors: every tensor under the source's names (a wrapping prefix such as `model.vqmodel.` removed).
        scheme: how those names are formed.
        backbone: the architecture, read from the tensors.
        image_size: the side of the images the source works at.
        l2_normalized_codes: the source searches and decodes with unit-length codes (LlamaGen, Janus).
        commitment_cost: the source's β.
        notes: facts about the source recorded in the converted tokenizer's `training_metadata`.
        processor: `VQImageProcessor` settings reproducing the source's pixel pipeline.
    """

    source: str
    tensors: dict[str, torch.Tensor]
    scheme: NameScheme
    backbone: VQGANBackboneConfig
    image_size: int
    l2_normalized_codes: bool = False
    commitment_cost: float = 0.25
    notes: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)


def without_prefix(tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The tensors of the VQ model inside a larger checkpoint (`model.vqmodel.` in a full Janus or
    Chameleon model), found by where its codebook sits, with that prefix removed."""
    prefixes = {name[: -len(CODEBOOK)] for name in tensors if name.endswith(CODEBOOK)}
    if len(prefixes) != 1:
        raise ValueError(
            f"{where} holds {'no' if not prefixes else len(prefixes)} VQ codebook(s) named '...{CODEBOOK}' "
            f"{sorted(prefixes) if prefixes else ''}: it is not a VQGAN tokenizer checkpoint this source can read"
        )
    prefix = prefixes.pop()
    return {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def raw_tensors(checkpoint: CheckpointFile, filename: str | None) -> dict[str, torch.Tensor]:
    """The state dict of a raw `.pt` / `.ckpt` / `.safetensors` file: `checkpoint` itself, or `filename`
    inside the folder or Hub repo `checkpoint` names."""
    if checkpoint.is_local and not filename and not _is_folder(checkpoint):
        path = checkpoint.source
    elif filename:
        path = str(checkpoint.path(filename))
    else:
        raise ValueError(f"{checkpoint} is a folder or Hub repo: name the checkpoint file inside it (`filename`)")
    return without_prefix(state_dict_of(read_torch_checkpoint(path), path), path)


def _is_folder(checkpoint: CheckpointFile) -> bool:
    return os.path.isdir(checkpoint.source)


def _transformers_vq(checkpoint: CheckpointFile, model_types: tuple[str, str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(vq config, tensors) of a transformers checkpoint: a full model (`model_types[0]`, whose
    `vq_config` describes the VQ model) or the VQ model alone (`model_types[1]`)."""
    config = checkpoint.json("config.json")
    model_type = config.get("model_type")
    if model_type == model_types[0]:
        config = config.get("vq_config") or {}
    elif model_type != model_types[1]:
        raise ValueError(
            f"{checkpoint}/config.json has model_type {model_type!r}; this source reads transformers checkpoints "
            f"of model_type {model_types[0]!r} or {model_types[1]!r}"
        )
    if config.get("double_latent"):
        raise ValueError(f"{checkpoint}: a VQ model with `double_latent=True` is not a VQGAN tokenizer vqtok can import")
    tensors = checkpoint.safetensors("model.safetensors", lambda name: "vqmodel." in name or not name.startswith("model."))
    return config, without_prefix(tensors, str(checkpoint))


def read_janus(checkpoint: CheckpointFile, filename: str | None = None, image_size: int | None = None) -> SourceCheckpoint:
    """Janus's VQ tokenizer (LlamaGen-16's architecture): transformers' `JanusVQVAE`, or a `.pt` in
    Janus's own (LlamaGen's) format."""
    if filename or not _is_folder_or_repo(checkpoint):
        return read_llamagen(checkpoint, filename, image_size, source="janus", default_size=384)
    config, tensors = _transformers_vq(checkpoint, ("janus", "janus_vqgan"))
    backbone = infer_backbone(tensors, TRANSFORMERS_JANUS)
    side = image_size or config.get("num_patches", 24) * backbone.downsampling_factor
    return SourceCheckpoint(
        "janus", tensors, TRANSFORMERS_JANUS, backbone, side, l2_normalized_codes=True,
        commitment_cost=float(config.get("beta", 0.25)), notes=_llamagen_search_note(), processor=_signed_unit(side),
    )


def read_llamagen(
    checkpoint: CheckpointFile, filename: str | None = None, image_size: int | None = None,
    source: str = "llamagen", default_size: int = 256,
) -> SourceCheckpoint:
    """LlamaGen's `.pt` (`{"model": state_dict, ...}`): VQ-16 or VQ-8, codes l2-normalised as its
    `codebook_l2_norm=True` does in every released tokenizer."""
    tensors = raw_tensors(checkpoint, filename)
    side = image_size or default_size
    return SourceCheckpoint(
        source, tensors, LLAMAGEN, infer_backbone(tensors, LLAMAGEN), side, l2_normalized_codes=True,
        notes=_llamagen_search_note(), processor=_signed_unit(side),
    )


def read_chameleon(checkpoint: CheckpointFile, filename: str | None = None, image_size: int | None = None) -> SourceCheckpoint:
    """Chameleon's VQGAN: transformers' `ChameleonVQVAE` (encoder only), or Meta's `vqgan.ckpt`
    (taming's format, with the decoder)."""
    processor = {
        "resample": 1,  # PIL's LANCZOS, as transformers' ChameleonImageProcessor
        "rescale_factor": 0.0078, "image_mean": [1.0, 1.0, 1.0], "image_std": [1.0, 1.0, 1.0],
    }
    if filename or not _is_folder_or_repo(checkpoint):
        read = read_taming(checkpoint, filename, image_size, source="chameleon", default_size=512)
        read.processor.update(processor)
        return read
    config, tensors = _transformers_vq(checkpoint, ("chameleon", "chameleon_vqgan"))
    side = image_size or config.get("resolution", 512)
    return SourceCheckpoint(
        "chameleon", tensors, TAMING, infer_backbone(tensors, TAMING), side,
        notes={"decoder": "not in transformers' ChameleonVQVAE: this tokenizer encodes only"},
        processor={**_signed_unit(side), **processor},
    )


def read_taming(
    checkpoint: CheckpointFile, filename: str | None = None, image_size: int | None = None,
    source: str = "taming", default_size: int = 256,
) -> SourceCheckpoint:
    """A taming-transformers VQGAN (`VQModel` with `VectorQuantizer2`): its Lightning `.ckpt`."""
    tensors = raw_tensors(checkpoint, filename)
    if "quantize.used" in tensors:
        raise ValueError(
            f"{checkpoint}: this taming checkpoint remaps its code ids (`quantize.used`), which vqtok does not import"
        )
    side = image_size or default_size
    notes = _legacy_beta_note("taming's VectorQuantizer2")
    return SourceCheckpoint(source, tensors, TAMING, infer_backbone(tensors, TAMING), side, notes=notes,
                            processor=_signed_unit(side))


def read_diffusers(checkpoint: CheckpointFile, filename: str | None = None, image_size: int | None = None) -> SourceCheckpoint:
    """A diffusers `VQModel` (taming / LDM architecture, group norm): `config.json` plus
    `diffusion_pytorch_model.safetensors`."""
    config = checkpoint.json("config.json")
    if config.get("_class_name", "VQModel") != "VQModel":
        raise ValueError(f"{checkpoint}/config.json describes a {config.get('_class_name')}, not a diffusers VQModel")
    unsupported = {
        "norm_type": (config.get("norm_type", "group"), "group"),
        "act_fn": (config.get("act_fn", "silu"), "silu"),
        "down_block_types": (set(config.get("down_block_types", ["DownEncoderBlock2D"])), {"DownEncoderBlock2D"}),
        "up_block_types": (set(config.get("up_block_types", ["UpDecoderBlock2D"])), {"UpDecoderBlock2D"}),
    }
    for name, (value, supported) in unsupported.items():
        if value != supported:
            raise ValueError(
                f"{checkpoint}: VQModel `{name}` is {value!r}; vqtok imports the taming / LDM architecture ({supported!r}) "
                "only (MoVQ's spatial norm and attention in the up/down blocks are not supported)"
            )
    tensors = checkpoint.safetensors(filename or "diffusion_pytorch_model.safetensors", lambda name: True)
    side = image_size or int(config.get("sample_size", 256))
    backbone = infer_backbone(tensors, DIFFUSERS, norm_groups=int(config.get("norm_num_groups", 32)))
    return SourceCheckpoint("diffusers", tensors, DIFFUSERS, backbone, side, notes=_legacy_beta_note("diffusers"),
                            processor=_signed_unit(side))


def _is_folder_or_repo(checkpoint: CheckpointFile) -> bool:
    return _is_folder(checkpoint) or not checkpoint.is_local


def _signed_unit(side: int) -> dict:
    """Processor settings of the sources that feed images in [-1, 1] (x / 127.5 - 1) at `side` pixels."""
    return {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}}


def _llamagen_search_note() -> dict:
    return {"code_search": (
        "LlamaGen's and Janus's code l2-normalise the latents and the codes before the nearest-code search and "
        "decode with unit-length codes; this tokenizer does the same (use_cosine=True, codes stored normalised). "
        "transformers' JanusVQVAE.encode searches the stored codes without normalising them, which gives the same "
        "ids only where the stored codes have unit length."
    )}


def _legacy_beta_note(source: str) -> dict:
    return {"beta_convention": (
        f"{source}'s VectorQuantizer (legacy=True) weighs the commitment term by 1 and the codebook term by beta = 0.25; "
        "vqtok-vq weighs the commitment term by commitment_cost (kept at 0.25) and the codebook term by 1."
    )}


READERS = {
    "janus": read_janus,
    "llamagen": read_llamagen,
    "chameleon": read_chameleon,
    "taming": read_taming,
    "diffusers": read_diffusers,
}
"""Source name -> the function reading its checkpoint `(CheckpointFile, filename, image_size)`."""
