#!/usr/bin/env python
"""Import a pretrained tokenizer of another project: the command `vqtok convert` as a script (for launchers such as torchrun and
`accelerate launch`). `python training/convert_checkpoint.py --help` lists its options; see `vqtok/commands/convert.py`."""

from vqtok.commands import script

if __name__ == "__main__":
    script("convert")
