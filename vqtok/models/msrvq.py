"""Multi-scale residual VQ tokenizer (Tian et al. 2024, VAR): one codebook quantizes the residual coarse
to fine, at growing resolutions; ids `[B, h, w, R]`, one level per scale."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import NEURIPS, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import POSITIVE_INT, document_options
from ..quantizers import MultiScaleResidualQuantizer
from ..quantizers.msrvq import default_scales

VAR_PAPER = Paper(
    "tian2024visual", "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction",
    ("Tian, Keyu", "Jiang, Yi", "Yuan, Zehuan", "Peng, Bingyue", "Wang, Liwei"), 2024, NEURIPS, volume="37",
    arxiv_id="2404.02905",
)


@document_options
class MSRVQConfig(VQTokenizerConfig, quantizer=MultiScaleResidualQuantizer):
    r"""Multi-scale residual VQ tokenizer (VAR, Tian et al. 2024): the residual is quantized at the
    `scales` s_1 < ... < s_R (the last the token grid's side) with one shared codebook, each scale's
    codes upsampled to the grid and taken off the residual. A position's token is R ids, level k
    holding scale k's id of the cell it lies in (see `MultiScaleResidualQuantizer`). `scales` left
    out is filled in from the grid: 1, 2, 4, ... and the grid's side.
    """

    model_type = "vqtok-msrvq"
    reference = QuantizerReference(
        "Multi-scale residual VQ", "multi-scale-residual-vq", (VAR_PAPER,),
        "Multi-scale residual quantization: one codebook quantizes the residual coarse to fine at growing "
        "resolutions, each scale's codes upsampled and subtracted before the next.",
    )

    def check(self) -> None:
        """Also `scales` filled in from the token grid where it was left out, and its last scale the grid's side."""
        factor = self.backbone_config.downsampling_factor
        if self.scales is None and POSITIVE_INT.accepts(self.image_size) and self.image_size % factor == 0:
            self.scales = default_scales(self.backbone_config.token_grid(self.image_size)[0])
        super().check()
        side = self.token_grid[0]
        if self.scales[-1] != side:
            where = (f"the 1-D sequence's length {side} (num_latent_tokens)" if self.is_sequence else
                     f"the token grid's side {side} (image_size {self.image_size} / downsampling factor {self.downsampling_factor})")
            raise ValueError(f"config field `scales` must end with {where}, got {self.scales}")


class MSRVQModel(VQTokenizerPreTrainedModel):
    """Multi-scale residual VQ tokenizer (`MSRVQConfig`)."""

    config_class = MSRVQConfig
