"""Tokenizer models: a `PreTrainedModel` base holding encoder, quantizer and decoder, one thin
model class per quantizer config, and the `VQTokenizer` auto class that loads any of them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import create_repo
from safetensors import SafetensorError
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .backbone import Decoder, Encoder
from .configuration import GumbelVQConfig, NSVQConfig, SoftVQConfig, VQConfig, VQTokenizerConfig
from .quantizers import GumbelQuantizer, NSVQuantizer, Quantizer, SoftEMQuantizer, VectorQuantizer
from .hub import DEFAULT_LICENSE, render_model_card
from .loading import HUB_DOWNLOAD_KWARGS, check_config_file, check_loading_info, check_safetensors_weights
from .registry import TOKENIZER_REGISTRY, register_tokenizer
from .validation import check_pixel_values, check_token_grid


@dataclass
class VQTokenizerOutput(ModelOutput):
    """Output of a tokenizer's training forward.

    Attributes:
        loss: total loss, the sum of every term in `losses`.
        reconstruction: decoded images `[B, C, H, W]` (not clamped).
        input_ids: token ids chosen in this forward `[B, h, w]`.
        quantized: the vectors the decoder received `[B, D, h, w]`.
        losses: every named loss term (`reconstruction_loss`, `commitment_loss`, ...).
        reconstruction_loss / commitment_loss / codebook_loss: the common terms, for convenience
            (None when the quantizer has no such term).
        perplexity: exp(entropy) of this batch's code histogram.
        usage: fraction of codes used in this batch.
        stats: every diagnostic the quantizer reported.
    """

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    quantized: torch.Tensor | None = None
    losses: dict | None = None
    reconstruction_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    usage: torch.Tensor | None = None
    stats: dict | None = None


# save_pretrained(push_to_hub=True, ...) keywords that belong to push_to_hub.
_PUSH_TO_HUB_KWARGS = (
    "repo_id", "metrics", "training_data", "datasets", "license", "tags",
    "commit_message", "commit_description", "private", "revision", "create_pr",
)


class VQTokenizerPreTrainedModel(PreTrainedModel):
    """Base of every vqtok tokenizer: encoder -> quantizer -> decoder.

    Subclasses set `config_class` and implement `build_quantizer(config)`; everything else
    (encode/decode/forward, input checks, safetensors-only loading) lives here.
    """

    config_class = VQTokenizerConfig
    base_model_prefix = "vqtok"
    main_input_name = "pixel_values"

    def __init__(self, config: VQTokenizerConfig):
        super().__init__(config)
        self.encoder = Encoder(config)
        self.quantizer: Quantizer = self.build_quantizer(config)
        self.decoder = Decoder(config)
        self.post_init()

    def build_quantizer(self, config: VQTokenizerConfig) -> Quantizer:
        raise NotImplementedError(f"{type(self).__name__} must implement build_quantizer(config)")

    def _init_weights(self, module):
        # PyTorch's default initialisation is kept; quantizers initialise their own codebooks.
        pass

    # --- public API ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Deterministic token ids `[B, H/f, W/f]` (`torch.long`, in [0, K)) for images in [-1, 1]."""
        check_pixel_values(pixel_values, self.config.in_channels, self.config.downsampling_factor)
        z_e = self.encoder(pixel_values.to(self.dtype))
        return self.quantizer.select(z_e)

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Images `[B, C, h*f, w*f]` in [-1, 1] for token ids `[B, h, w]` or `[B, h*w]`."""
        grid_ids = check_token_grid(input_ids, self.config.token_grid)
        latents = self.quantizer.embed(grid_ids.to(self.device))
        return self.decoder(latents.to(self.dtype)).clamp(-1.0, 1.0)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> VQTokenizerOutput:
        """Training path: stochastic where the quantizer is; returns every named loss term."""
        check_pixel_values(pixel_values, self.config.in_channels, self.config.downsampling_factor)
        z_e = self.encoder(pixel_values)
        quantized = self.quantizer(z_e)
        reconstruction = self.decoder(quantized.quantized)
        losses = {
            "reconstruction_loss": self.config.reconstruction_loss_weight
            * F.mse_loss(reconstruction.float(), pixel_values.float()),
            **quantized.losses,
        }
        output = VQTokenizerOutput(
            loss=sum(losses.values()),
            reconstruction=reconstruction,
            input_ids=quantized.indices,
            quantized=quantized.quantized,
            losses=losses,
            reconstruction_loss=losses["reconstruction_loss"],
            commitment_loss=losses.get("commitment_loss"),
            codebook_loss=losses.get("codebook_loss"),
            perplexity=quantized.stats.get("perplexity"),
            usage=quantized.stats.get("usage"),
            stats=quantized.stats,
        )
        return output if return_dict else output.to_tuple()

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load from a directory or Hub repo: `config.json` + safetensors weights only (never pickle).

        Hub arguments (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`,
        `subfolder`, `proxies`) pass through to `transformers.PreTrainedModel.from_pretrained`.

        Raises:
            OSError: no `config.json`; no `model.safetensors` (also when the only checkpoint is a
                pickle such as `pytorch_model.bin`, which is never opened); a corrupt safetensors file.
            ValueError: a `config.json` of another tokenizer type, or weights that do not match the
                config (tensor shapes differ, tensors missing or unexpected). Nothing is silently
                re-initialised; `ignore_mismatched_sizes=True` re-initialises shape-mismatched
                tensors on purpose.
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("vqtok loads safetensors weights only; use_safetensors=False is not supported")
        kwargs["use_safetensors"] = True
        source = os.fspath(pretrained_model_name_or_path)
        if os.path.isfile(source):
            raise OSError(
                f"{source} is a file; pass the directory (or Hub repo id) holding config.json and model.safetensors"
            )
        download = {k: kwargs[k] for k in HUB_DOWNLOAD_KWARGS if k in kwargs}
        if kwargs.get("config") is None:
            check_config_file(cls, source, download)
        check_safetensors_weights(source, download, kwargs.get("variant"))
        return_info = kwargs.pop("output_loading_info", False)
        allow_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            # transformers 5 only logs missing/unexpected tensors; they are checked below.
            model, info = super().from_pretrained(
                source, *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        except (SafetensorError, RuntimeError) as error:
            if "safetensor" not in f"{type(error).__name__} {error}".lower() and not isinstance(error, SafetensorError):
                raise
            raise OSError(
                f"could not read the safetensors weights of {source}: the file is corrupt or truncated ({error})"
            ) from error
        check_loading_info(source, info, allow_mismatch)
        return (model, info) if return_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """`transformers`' `save_pretrained`; with `push_to_hub=True` the upload goes through
        `push_to_hub` (keywords `repo_id`, `commit_message`, `private`, `metrics`, ...), so the Hub repo
        gets the vqtok model card."""
        hub_kwargs = {k: kwargs.pop(k) for k in _PUSH_TO_HUB_KWARGS if k in kwargs} if push_to_hub else {}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if push_to_hub and kwargs.get("is_main_process", True):
            repo_id = hub_kwargs.pop("repo_id", None) or Path(save_directory).resolve().name
            for name in ("token", "max_shard_size"):
                if name in kwargs:
                    hub_kwargs[name] = kwargs[name]
            self.push_to_hub(repo_id, **hub_kwargs)
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        metrics: Mapping[str, object] | None = None,
        training_data: str | None = None,
        datasets: Sequence[str] | None = None,
        license: str = DEFAULT_LICENSE,  # noqa: A002 - the Hub's name for the field
        tags: Sequence[str] | None = None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
    ):
        """Upload `config.json`, `model.safetensors` and a model card (`README.md`) to the Hub repo
        `repo_id`, creating the repo if needed.

        The card is rendered from `model_cards/tokenizer_card.md` (see `vqtok.hub.render_model_card`)
        on every push and replaces the repo's README.md: quantizer and its paper, config summary,
        `training_data` (Markdown) and `datasets` (Hub ids), the `metrics` table (name -> value),
        usage, `license`, and the tags `image-tokenization`, `vqtok`, the quantizer's tag and `tags`.
        The other arguments are those of `transformers`' `push_to_hub` (`revision` is the branch to
        push to). Returns the `huggingface_hub.CommitInfo`; its `oid` is the commit to pin with
        `from_pretrained(..., revision=oid)`.
        """
        card_kwargs = dict(metrics=metrics, training_data=training_data, datasets=datasets, license=license, tags=tags)
        card = render_model_card(self, repo_id=repo_id, **card_kwargs)  # bad arguments fail before any upload
        full_repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        if full_repo_id != repo_id:
            card = render_model_card(self, repo_id=full_repo_id, **card_kwargs)
        with tempfile.TemporaryDirectory() as tmp_dir:
            self.save_pretrained(tmp_dir, max_shard_size=max_shard_size)
            card.save(os.path.join(tmp_dir, "README.md"))
            return self._upload_modified_files(
                tmp_dir,
                full_repo_id,
                files_timestamps={},
                commit_message=commit_message,
                token=token,
                create_pr=create_pr,
                revision=revision,
                commit_description=commit_description,
            )


def _quantizer_from_config(quantizer_class: type[Quantizer], config: VQTokenizerConfig, *fields: str) -> Quantizer:
    """`quantizer_class(codebook_size, latent_dim, **{field: config.field for field in fields})`: for
    quantizers whose keyword arguments carry the names of their config fields."""
    options = {name: getattr(config, name) for name in fields}
    return quantizer_class(codebook_size=config.codebook_size, dim=config.latent_dim, **options)


class VQModel(VQTokenizerPreTrainedModel):
    """VQ-VAE tokenizer (`VQConfig`): nearest-code quantization with straight-through gradients."""

    config_class = VQConfig

    def build_quantizer(self, config: VQConfig) -> VectorQuantizer:
        return _quantizer_from_config(
            VectorQuantizer,
            config,
            "commitment_cost",
            "use_ema",
            "ema_decay",
            "ema_epsilon",
            "kmeans_init",
            "kmeans_iters",
            "dead_code_threshold",
            "use_cosine",
        )


class NSVQModel(VQTokenizerPreTrainedModel):
    """NSVQ tokenizer (`NSVQConfig`): noise substitution in training, nearest code at encode."""

    config_class = NSVQConfig

    def build_quantizer(self, config: NSVQConfig) -> NSVQuantizer:
        return _quantizer_from_config(
            NSVQuantizer, config, "replace_every", "replace_fraction", "stop_replacing_after",
            "replacement_jitter", "kmeans_init", "kmeans_iters",
        )


class SoftVQModel(VQTokenizerPreTrainedModel):
    """Soft VQ tokenizer trained by EM (`SoftVQConfig`): sampled soft assignments in training,
    nearest code at encode."""

    config_class = SoftVQConfig

    def build_quantizer(self, config: SoftVQConfig) -> SoftEMQuantizer:
        return _quantizer_from_config(
            SoftEMQuantizer, config, "num_samples", "commitment_cost", "ema_decay", "ema_epsilon",
            "temperature", "kmeans_init", "kmeans_iters",
        )


class GumbelVQModel(VQTokenizerPreTrainedModel):
    """Gumbel-softmax VQ tokenizer (`GumbelVQConfig`): hard Gumbel samples in training, the logits'
    argmax at encode."""

    config_class = GumbelVQConfig

    def build_quantizer(self, config: GumbelVQConfig) -> GumbelQuantizer:
        return _quantizer_from_config(GumbelQuantizer, config, "tau_max", "tau_min", "tau_decay", "diversity_weight")


register_tokenizer(VQConfig, VQModel)
register_tokenizer(NSVQConfig, NSVQModel)
register_tokenizer(SoftVQConfig, SoftVQModel)
register_tokenizer(GumbelVQConfig, GumbelVQModel)


def _check_local_path(name_or_path) -> None:
    """A path that is clearly local (absolute, ./ or ../, or a PathLike) must exist; otherwise the
    Hub client would report it as a malformed repo id."""
    text = os.fspath(name_or_path)
    looks_local = isinstance(name_or_path, os.PathLike) or os.path.isabs(text) or text.startswith((".", "~"))
    if looks_local and not os.path.isdir(os.path.expanduser(text)):
        raise OSError(f"no tokenizer directory at {text!r} (expected a folder with config.json and model.safetensors)")


class VQTokenizer:
    """Auto class: builds or loads the right tokenizer for a config's `model_type`.

    >>> tokenizer = VQTokenizer.from_pretrained("path/or/repo-id")
    >>> ids = tokenizer.encode(pixel_values)          # [B, h, w] torch.long
    >>> images = tokenizer.decode(ids)                # [B, C, H, W] in [-1, 1]
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("VQTokenizer is an auto class: use VQTokenizer.from_pretrained(...) or VQTokenizer.from_config(...)")

    @staticmethod
    def model_class_for(model_type: str) -> type[VQTokenizerPreTrainedModel]:
        """The registered model class for `model_type` (ValueError naming the known types otherwise)."""
        if model_type not in TOKENIZER_REGISTRY:
            raise ValueError(
                f"unknown vqtok model_type {model_type!r}; registered types: {sorted(TOKENIZER_REGISTRY)}"
            )
        return TOKENIZER_REGISTRY[model_type][1]

    @classmethod
    def from_config(cls, config: VQTokenizerConfig) -> VQTokenizerPreTrainedModel:
        """A freshly initialised tokenizer for `config`."""
        if not isinstance(config, VQTokenizerConfig):
            raise TypeError(f"config must be a VQTokenizerConfig subclass, got {type(config).__name__}")
        return cls.model_class_for(config.model_type)(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> VQTokenizerPreTrainedModel:
        """Load any vqtok tokenizer saved with `save_pretrained` or pushed to the Hub.

        Keyword arguments (`revision`, `cache_dir`, `token`, `local_files_only`, ...) pass through to
        `transformers.PreTrainedModel.from_pretrained`. A `config.json` whose `model_type` is not a
        registered vqtok type raises `ValueError` listing the registered types; the other errors are
        those of `VQTokenizerPreTrainedModel.from_pretrained`.
        """
        _check_local_path(pretrained_model_name_or_path)
        source = os.fspath(pretrained_model_name_or_path)
        config = kwargs.pop("config", None)
        if config is None:
            download = {k: kwargs[k] for k in HUB_DOWNLOAD_KWARGS if k in kwargs}
            check_config_file(VQTokenizerPreTrainedModel, source, download)
            config_dict, _ = PreTrainedConfig.get_config_dict(source, **download)
            try:
                model_class = cls.model_class_for(config_dict.get("model_type"))
            except ValueError as error:
                raise ValueError(f"cannot load {source}: {error}") from None
            config = model_class.config_class.from_dict(config_dict)
        elif isinstance(config, VQTokenizerConfig):
            model_class = cls.model_class_for(config.model_type)
        else:
            raise TypeError(f"config must be a VQTokenizerConfig subclass, got {type(config).__name__}")
        return model_class.from_pretrained(source, config=config, **kwargs)
