"""Test-only extensions, each written the way a new one is added to vqtok: its own files plus one
registration line, nothing in the model base, the loader, the Hub code or the trainer.

- a quantizer type: its quantizer (`residual_sign_quantizer.py`: implicit codes, K = 2^D derived from
  D, R = `depth` codes per position, so the contract tests cover the id contract `[B, h, w, R]`), its
  model file (`residual_sign_model.py`: the config names the quantizer and adds nothing else), a run
  config (`residual_sign.yaml`) and the registration line below;
- a backbone (`pixel_shuffle_backbone.py`, `backbone_type="test-pixel-shuffle"`): two 1x1 convs
  around a pixel (un)shuffle;
- a training objective with a network of its own (`critic_objective.py`, `objectives: {test-critic:
  {...}}`): a tiny patch critic (built for the tokenizer's channels) trained by its own optimizer with
  the hinge loss, whose score of the reconstruction joins the tokenizer's loss; it counts its updates
  in a buffer of its own.

`conftest.py` imports this package, so all three are registered for the whole test session.
"""

from vqtok import register_tokenizer
from vqtok.backbones import register_backbone
from vqtok.losses import register_objective

from .critic_objective import CriticObjective
from .pixel_shuffle_backbone import PixelShuffleBackboneConfig, PixelShuffleDecoder, PixelShuffleEncoder
from .residual_sign_model import ResidualSignConfig, ResidualSignModel
from .residual_sign_quantizer import ResidualSignQuantizer

# --- the registration lines ---------------------------------------------------------------------
register_tokenizer(ResidualSignModel)
register_backbone(PixelShuffleBackboneConfig)
register_objective(CriticObjective)

__all__ = [
    "CriticObjective",
    "PixelShuffleBackboneConfig",
    "PixelShuffleDecoder",
    "PixelShuffleEncoder",
    "ResidualSignConfig",
    "ResidualSignModel",
    "ResidualSignQuantizer",
]
