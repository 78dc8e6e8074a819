"""Every tokenizer type: one module each (config class, model class, paper reference), and the
registration of all of them, here, in one visible place.

Registering a type makes it loadable by `VQTokenizer`, `transformers.AutoConfig`, `AutoModel` and
`AutoImageProcessor`, and lets the training scripts and the contract tests find it by `model_type`.
"""

from ..auto import register_tokenizer
from .bsq import BSQConfig, BSQModel
from .fsq import FSQConfig, FSQModel
from .ibq import IBQConfig, IBQModel
from .lfq import LFQConfig, LFQModel
from .rvq import RVQConfig, RVQModel
from .simvq import SimVQConfig, SimVQModel
from .gumbel import GumbelVQConfig, GumbelVQModel
from .hypervq import HyperVQConfig, HyperVQModel
from .msrvq import MSRVQConfig, MSRVQModel
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
register_tokenizer(FSQModel)
register_tokenizer(LFQModel)
register_tokenizer(BSQModel)
register_tokenizer(RVQModel)
register_tokenizer(MSRVQModel)
register_tokenizer(SimVQModel)
register_tokenizer(IBQModel)

__all__ = [
    "BSQConfig",
    "BSQModel",
    "FSQConfig",
    "FSQModel",
    "GumbelVQConfig",
    "GumbelVQModel",
    "HyperVQConfig",
    "HyperVQModel",
    "IBQConfig",
    "IBQModel",
    "LFQConfig",
    "LFQModel",
    "MSRVQConfig",
    "MSRVQModel",
    "NSVQConfig",
    "NSVQModel",
    "RVQConfig",
    "RVQModel",
    "SQVAEConfig",
    "SQVAEModel",
    "SimVQConfig",
    "SimVQModel",
    "SoftVQConfig",
    "SoftVQModel",
    "VMFSQVAEConfig",
    "VMFSQVAEModel",
    "VQConfig",
    "VQModel",
]
