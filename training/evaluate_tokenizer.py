#!/usr/bin/env python
"""Evaluate a tokenizer on held-out images: the command `vqtok evaluate` as a script (for launchers such as torchrun and
`accelerate launch`). `python training/evaluate_tokenizer.py --help` lists its options; see `vqtok/commands/evaluate.py`."""

from vqtok.commands import script

if __name__ == "__main__":
    script("evaluate")
