"""From a source checkpoint (`sources.SourceCheckpoint`) to a vqtok tokenizer folder: the config, the
renamed tensors, the checks that every tensor is accounted for, and the files written."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import __version__
from ..hub import save_model_card
from ..hub.references import SOURCE_PROJECTS
from ..models.vq import VQConfig, VQModel
from ..processing import VQImageProcessor
from ..validation import check_output_folder
from .files import CheckpointFile
from .layout import CODEBOOK, tensor_names
from .sources import READERS, TRAINING_ONLY, SourceCheckpoint

SOURCES = tuple(READERS)
"""The sources `convert_checkpoint` reads: janus, llamagen, chameleon, taming, diffusers."""

CODEBOOK_STATE = "quantizer.codebook.weight"
_LISTED = 12  # names listed in an error before "... and N more"


def converted_config(read: SourceCheckpoint, checkpoint: str = "", license: str | None = None) -> VQConfig:
    """The `vqtok-vq` config reproducing a source checkpoint: its backbone, K and D from its codebook,
    unit-length codes where the source uses them, a codebook that stays as converted when fine-tuned
    (learnt by gradient, no k-means start, no restarts), and what the conversion records in
    `training_metadata["converted_from"]`."""
    tensors = read.tensors
    codebook_size, latent_dim = tensors[CODEBOOK].shape
    in_channels = tensors["encoder.conv_in.weight"].shape[1]
    has_decoder = any(name.startswith("decoder.") for name in tensors)
    if has_decoder and tensors.get("decoder.conv_out.weight", torch.empty(in_channels)).shape[0] != in_channels:
        raise ValueError(
            f"{read.source} checkpoint: the decoder gives {tensors['decoder.conv_out.weight'].shape[0]} channels for "
            f"{in_channels} input channels; vqtok tokenizers decode to the channels they encode"
        )
    converted_from = {"source": read.source, "checkpoint": checkpoint, **({"license": license} if license else {}), **read.notes}
    return VQConfig(
        in_channels=int(in_channels),
        image_size=int(read.image_size),
        latent_dim=int(latent_dim),
        codebook_size=int(codebook_size),
        use_cosine=read.l2_normalized_codes,
        commitment_cost=read.commitment_cost,
        use_ema=False,
        kmeans_init=False,
        dead_code_threshold=0.0,
        backbone_config=read.backbone,
        has_decoder=has_decoder,
        training_metadata={
            "converted_from": converted_from,
            "image_size": int(read.image_size),
            "in_channels": int(in_channels),
            "pixel_range": [-1.0, 1.0],
            "vqtok_version": __version__,
        },
    )


def convert_state_dict(read: SourceCheckpoint, config: VQConfig) -> dict[str, torch.Tensor]:
    """The source's tensors under vqtok's names, for a model built from `config`: q/k/v/output
    `nn.Linear` weights (diffusers) as 1x1 conv weights, the codebook at unit length where the
    source normalises it, everything in fp32, and the codebook marked initialised. Works on meta
    tensors too (no values are read).

    Raises `ValueError` listing the source tensors that are missing, and those that are unexpected
    (neither mapped nor one of the training-only tensors of `sources.TRAINING_ONLY`)."""
    names = tensor_names(config.backbone_config, read.scheme, with_decoder=config.has_decoder)
    expected = {name.source for name in names} | {CODEBOOK}
    ignored = {name for name in read.tensors if any(name.startswith(prefix) for prefix in TRAINING_ONLY)}
    if not config.has_decoder:
        ignored |= {name for name in read.tensors if name.startswith("post_quant_conv.")}
    missing = sorted(expected - read.tensors.keys())
    unexpected = sorted(read.tensors.keys() - expected - ignored)
    for problem, listed in (("is missing", missing), ("has unexpected", unexpected)):
        if listed:
            more = f" ... and {len(listed) - _LISTED} more" if len(listed) > _LISTED else ""
            raise ValueError(
                f"the {read.source} checkpoint {problem} tensor(s) for the architecture read from it "
                f"({config.backbone_config.to_dict()}): {listed[:_LISTED]}{more}"
            )
    state = {}
    for name in names:
        tensor = read.tensors[name.source]
        if name.linear_to_conv and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]
        state[name.vqtok] = tensor.float()
    codebook = read.tensors[CODEBOOK].float()
    state[CODEBOOK_STATE] = F.normalize(codebook, dim=1) if config.use_cosine else codebook
    state["quantizer.codebook.initialized"] = torch.tensor(True, device=codebook.device)
    return state


def load_converted(model: VQModel, state: dict[str, torch.Tensor], source: str) -> VQModel:
    """`model` with the converted tensors loaded, after checking every shape (a `ValueError` naming
    the tensor) and that each value is finite; only the quantizer's usage record keeps its start."""
    target = model.state_dict()
    for name, tensor in state.items():
        if name not in target:
            raise ValueError(f"the converted {source} checkpoint has a tensor {name!r} that the vqtok model lacks")
        if tensor.shape != target[name].shape:
            raise ValueError(
                f"the {source} checkpoint's tensor for {name!r} has shape {list(tensor.shape)}, the vqtok model "
                f"expects {list(target[name].shape)}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"the {source} checkpoint's tensor for {name!r} holds NaN or infinite values")
    result = model.load_state_dict(state, strict=False)
    left = sorted(set(result.missing_keys) - {"quantizer.codebook.usage"})
    if left:
        raise ValueError(f"the {source} checkpoint gave no value for the vqtok tensor(s) {left}")
    return model.eval()


def convert_checkpoint(
    source: str,
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    filename: str | None = None,
    subfolder: str = "",
    revision: str | None = None,
    image_size: int | None = None,
    license: str | None = None,  # noqa: A002 - the Hub's name for the field
) -> VQModel:
    """Import a pretrained VQGAN tokenizer as a vqtok tokenizer.

    Args:
        source: one of `SOURCES` (janus, llamagen, chameleon, taming, diffusers).
        checkpoint: a local file or folder, or a Hub repo id: a transformers folder or repo (janus,
            chameleon), a diffusers `VQModel` folder or repo (diffusers), or a raw `.pt` / `.ckpt`
            (llamagen, taming; janus and chameleon in their own projects' formats).
        output_dir: where to write the tokenizer (`config.json`, `model.safetensors`,
            `preprocessor_config.json`, `README.md`); nothing is written when None.
        filename: the raw checkpoint file inside a folder or Hub repo (e.g. `vq_ds16_c2i.pt`).
        subfolder: the folder holding the model inside a repo (`vqvae` in a diffusers pipeline).
        revision: the Hub revision to read.
        image_size: the image side the tokenizer is documented for (default: the source's own).
        license: the Hub license identifier for the card (default: the source project's).

    Returns:
        the tokenizer (`VQModel`, eval mode), whose `encode` gives the source's ids.
    """
    if source not in READERS:
        raise ValueError(f"unknown source {source!r}; vqtok converts {list(SOURCES)}")
    if output_dir is not None and os.path.exists(output_dir):
        check_output_folder(output_dir, "output_dir")  # before any reading: a file or a locked folder fails now
    location = CheckpointFile(checkpoint, subfolder=subfolder, revision=revision)
    read = READERS[source](location, filename, image_size)
    name = f"{location}/{filename}" if filename else str(location)
    config = converted_config(read, name, license)
    model = load_converted(VQModel(config), convert_state_dict(read, config), source)
    if output_dir is not None:
        save_converted(model, read, output_dir, license)
    return model


def save_converted(model: VQModel, read: SourceCheckpoint, output_dir: str | os.PathLike, license: str | None) -> Path:
    """Write the tokenizer folder: weights and config, the source's pixel pipeline and the card."""
    output = Path(output_dir)
    model.save_pretrained(output)
    settings = dict(read.processor)
    settings.pop("size", None), settings.pop("crop_size", None)
    VQImageProcessor.for_image_size(read.image_size, model.config.in_channels, **settings).save_pretrained(output)
    project = SOURCE_PROJECTS[read.source]
    save_model_card(
        model, output, **({"license": license} if license else {}),
        training_data=f"Trained by {project.project} ({project.url}), not by vqtok: see the source's paper.",
    )
    return output
