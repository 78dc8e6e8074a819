"""Every tokenizer type: one module each (config class, model class, paper reference), and the
registration of all of them, here, in one visible place.

Registering a type makes it loadable by `VQTokenizer`, `transformers.AutoConfig`, `AutoModel` and
`AutoImageProcessor`, and lets the training scripts and the contract tests find it by `model_type`.
"""

from ..auto import register_tokenizer
from .gumbel import GumbelVQConfig, GumbelVQModel
from .hypervq import HyperVQConfig, HyperVQModel
from .nsvq import NSVQConfig, NSVQModel
from .softvq import SoftVQConfig, SoftVQModel
from .sqvae import SQVAEConfig, SQVAEModel
from .vmf_sqvae import VMFSQVAEConfig, VMFSQVAEModel
from .vq import VQConfig, VQModel

register_tokenizer(VQModel)
register_tokenizer(NSVQModel)
register_tokenizer(SoftVQModel)
register_tokenizer(GumbelVQModel)
register_tokenizer(SQVAEModel)
register_tokenizer(VMFSQVAEModel)
register_tokenizer(HyperVQModel)

__all__ = [
    "GumbelVQConfig",
    "GumbelVQModel",
    "HyperVQConfig",
    "HyperVQModel",
    "NSVQConfig",
    "NSVQModel",
    "SQVAEConfig",
    "SQVAEModel",
    "SoftVQConfig",
    "SoftVQModel",
    "VQConfig",
    "VMFSQVAEConfig",
    "VMFSQVAEModel",
    "VQModel",
]
