#!/usr/bin/env python
"""Sample token grids and decode them into images: the command `vqtok sample` as a script (for launchers such as torchrun and
`accelerate launch`). `python training/sample.py --help` lists its options; see `vqtok/commands/sample.py`."""

from vqtok.commands import script

if __name__ == "__main__":
    script("sample")
