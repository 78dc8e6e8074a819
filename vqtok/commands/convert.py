"""`vqtok convert`: import a pretrained VQGAN tokenizer from another project as a vqtok tokenizer folder.

    vqtok convert --source janus --input deepseek-community/Janus-Pro-1B --output outputs/janus-pro-vq
    vqtok convert --source llamagen --input vq_ds16_c2i.pt --output outputs/llamagen-vq16
    vqtok convert --source llamagen --input FoundationVision/LlamaGen --filename vq_ds16_c2i.pt --output outputs/llamagen-vq16
    vqtok convert --source chameleon --input facebook/chameleon-7b --output outputs/chameleon-vq   # encoder only
    vqtok convert --source chameleon --input chameleon/tokenizer/vqgan.ckpt --output outputs/chameleon-vq
    vqtok convert --source taming --input last.ckpt --image_size 256 --output outputs/taming-f16
    vqtok convert --source diffusers --input path/to/pipeline --subfolder vqvae --output outputs/ldm-vq

Writes `--output`: `config.json` (a `vqtok-vq` tokenizer on the `vqgan` backbone), `model.safetensors`,
`preprocessor_config.json` (the source's pixel pipeline) and `README.md` (a model card naming and citing
the source under its license). Load it with `VQTokenizer.from_pretrained(output)`; publish it with
`tokenizer.push_to_hub(repo_id)`.

Raw checkpoints are read with `torch.load(weights_only=True)` (tensors and plain containers only) or as
safetensors; a file that needs full unpickling is refused with a message saying how to extract its
weights. Missing or unexpected tensors are an error naming them.
"""

from __future__ import annotations

import argparse
import sys

from vqtok.commands import command_parser
from vqtok.conversion import SOURCES, convert_checkpoint
from vqtok.validation import describe_tokens


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("convert", __doc__)
    parser.add_argument("--source", required=True, choices=SOURCES, help="the project the checkpoint comes from")
    parser.add_argument("--input", required=True, help="a local file or folder, or a Hub repo id")
    parser.add_argument("--output", required=True, help="folder to write the vqtok tokenizer in")
    parser.add_argument("--filename", default=None, help="the raw checkpoint file inside a folder or Hub repo")
    parser.add_argument("--subfolder", default="", help="the model's folder inside the repo (diffusers pipelines: vqvae)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--image_size", type=int, default=None, help="image side (default: the source's own)")
    parser.add_argument("--license", default=None, help="Hub license id for the card (default: the source project's)")
    args = parser.parse_args(argv)
    if args.image_size is not None and args.image_size < 1:
        parser.error(f"--image_size must be a positive integer, got {args.image_size}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        tokenizer = convert_checkpoint(
            args.source, args.input, args.output, filename=args.filename, subfolder=args.subfolder,
            revision=args.revision, image_size=args.image_size, license=args.license,
        )
    except (OSError, ValueError) as error:
        sys.exit(f"convert_checkpoint.py: {error}")
    config = tokenizer.config
    print(
        f"converted {args.source} checkpoint {args.input} -> {args.output}: K = {config.codebook_size}, D = {config.latent_dim}, "
        f"f = {config.downsampling_factor}, {describe_tokens(config.token_grid, config.codes_per_position)} tokens per {config.image_size} px image, "
        f"{tokenizer.num_parameters():,} parameters{'' if config.has_decoder else ', encoder only'}"
    )
    return tokenizer

