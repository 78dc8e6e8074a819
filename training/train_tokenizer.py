#!/usr/bin/env python
"""Train an image tokenizer: the command `vqtok train` as a script (for launchers such as torchrun and
`accelerate launch`). `python training/train_tokenizer.py --help` lists its options; see `vqtok/commands/train.py`."""

from vqtok.commands import script

if __name__ == "__main__":
    script("train")
