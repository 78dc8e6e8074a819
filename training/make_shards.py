#!/usr/bin/env python
"""Write images into webdataset tar shards: the command `vqtok shards` as a script (for launchers such as torchrun and
`accelerate launch`). `python training/make_shards.py --help` lists its options; see `vqtok/commands/shards.py`."""

from vqtok.commands import script

if __name__ == "__main__":
    script("shards")
