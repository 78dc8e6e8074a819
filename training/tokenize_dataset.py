#!/usr/bin/env python
"""Tokenize image datasets: the command `vqtok tokenize` as a script (for launchers such as torchrun and
`accelerate launch`). `python training/tokenize_dataset.py --help` lists its options; see `vqtok/commands/tokenize.py`."""

from vqtok.commands import script

if __name__ == "__main__":
    script("tokenize")
