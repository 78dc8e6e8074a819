"""Pretrained VQGAN tokenizers of other projects, imported as vqtok tokenizers.

>>> from vqtok.conversion import convert_checkpoint
>>> tokenizer = convert_checkpoint("llamagen", "vq_ds16_c2i.pt", "outputs/llamagen-vq16")
>>> ids = tokenizer.encode(pixel_values)          # the ids LlamaGen's own code gives

Sources (`SOURCES`): `janus`, `llamagen`, `chameleon`, `taming`, `diffusers` (see
`vqtok.conversion.sources`). Each becomes a `vqtok-vq` tokenizer on the `vqgan` backbone with the
source's weights, its pixel pipeline in `preprocessor_config.json` and a model card naming and
citing the source under its license. Checkpoints are read as safetensors or with
`torch.load(weights_only=True)`; nothing is unpickled beyond tensors and plain containers.
"""

from __future__ import annotations


from .convert import SOURCES, convert_checkpoint, convert_state_dict, converted_config

__all__ = ["SOURCES", "convert_checkpoint", "convert_state_dict", "converted_config"]
