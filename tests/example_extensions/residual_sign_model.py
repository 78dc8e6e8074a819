"""The test-only tokenizer type of `ResidualSignQuantizer`: its model file says only what the type
adds (its name and its reference); every option of its config comes from the quantizer."""

from vqtok import VQTokenizerConfig, VQTokenizerPreTrainedModel
from vqtok.hub.references import QuantizerReference
from vqtok.options import document_options

from .residual_sign_quantizer import ResidualSignQuantizer


@document_options
class ResidualSignConfig(VQTokenizerConfig, quantizer=ResidualSignQuantizer):
    r"""Test-only tokenizer type with implicit, residual sign codes (`ResidualSignQuantizer`)."""

    model_type = "vqtok-test-residual-sign"
    reference = QuantizerReference(
        "Residual sign", "residual-sign", (), "Residual levels of sign codes (a test-only type of vqtok)."
    )


class ResidualSignModel(VQTokenizerPreTrainedModel):
    config_class = ResidualSignConfig
