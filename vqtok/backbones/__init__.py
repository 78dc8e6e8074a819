"""Backbones: the encoder and decoder around the quantizer."""
