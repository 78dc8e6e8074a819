#!/usr/bin/env python
"""Train an autoregressive prior on tokens: the command `vqtok prior` as a script (for launchers such as torchrun and
`accelerate launch`). `python training/train_prior.py --help` lists its options; see `vqtok/commands/prior.py`."""

from vqtok.commands import script

if __name__ == "__main__":
    script("prior")
