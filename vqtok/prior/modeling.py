"""`TokenPrior`: an autoregressive prior over token grids, a `transformers` causal LM underneath.

The sequence of an image is BOS (= K) followed by its h*w codes in row-major order (h*w*R, a
position's R codes consecutively, for a tokenizer with R codes per position). The model
predicts each code from the ones before it; its probabilities are those of the language model's
softmax restricted to the K codes (BOS is never a code: it is left out of the loss and suppressed
when sampling), so `bits_per_token` is an exact code length. Sampling goes through the language
model's `generate` (temperature, top-k, top-p); nothing here reimplements it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..hub import SafeHubMixin
from ..tokens.layout import TokenLayout, check_codes
from .card import render_prior_card
from .configuration import PriorConfig
from ..validation import check_positive_int, grid_fields
from .sampling import check_num_samples, check_seed


class TokenPrior(SafeHubMixin, PreTrainedModel):
    """An autoregressive prior `p(c_1 ... c_n) = prod_i p(c_i | c_<i)` over a tokenizer's n codes per image.

    >>> prior = TokenPrior(PriorConfig.for_tokenizer(tokenizer))
    >>> loss = prior(input_ids=prior.layout.to_sequences(codes), labels=...).loss   # nats per code
    >>> codes = prior.generate_codes(16, temperature=1.0, top_k=100, seed=0)        # [16, *token_shape]
    >>> images = tokenizer.decode(codes)

    Saved and loaded with `save_pretrained` / `from_pretrained` (config.json + safetensors, never a
    pickle) and published with `push_to_hub`, whose model card is `model_cards/prior_card.md`.
    """

    config_class = PriorConfig
    base_model_prefix = "prior"
    main_input_name = "input_ids"

    def __init__(self, config: PriorConfig):
        super().__init__(config)
        self.lm = AutoModelForCausalLM.from_config(config.lm_config)
        self.post_init()

    @classmethod
    def _loads_model_type(cls) -> str:
        return PriorConfig.model_type

    def render_card(self, **card_kwargs):
        """The prior's model card (see `vqtok.prior.render_prior_card`); `push_to_hub` uploads it."""
        return render_prior_card(self, **card_kwargs)

    @property
    def layout(self) -> TokenLayout:
        """The prior's own sequence layout: BOS = K, then the codes, no offset, no EOS."""
        config = self.config
        return TokenLayout(config.codebook_size, **grid_fields(config.token_grid), codes_per_position=config.codes_per_position,
                           bos_token_id=config.bos_token_id, tokenizer=config.tokenizer)

    def check_tokenizer(self, tokenizer) -> None:
        """ValueError unless `tokenizer` (a vqtok tokenizer or its config) has the prior's K and grid."""
        self.layout.check_compatible(tokenizer, "tokenizer", owner="the prior")

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """The language model's forward on sequences `[B, 1 + n]` that start with BOS. With `labels`
        (usually `input_ids`), `loss` is the mean negative log-likelihood in nats of `labels[:, 1:]`
        under the softmax over the K codes (positions labelled -100 are ignored)."""
        self._check_ids("input_ids", input_ids, self.config.codebook_size + 1)
        if labels is not None:
            self._check_ids("labels", labels[:, 1:][labels[:, 1:] != -100], self.config.codebook_size)
        output = self.lm(input_ids=input_ids, **kwargs)
        if labels is not None:
            logits = self._next_code_logits(output.logits)
            output.loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return output

    @torch.no_grad()
    def negative_log_likelihood(self, codes: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """-log p(codes) in nats, one value per image, for codes `[B, *token_shape]` or flattened."""
        check_positive_int("batch_size", batch_size)
        sequences = self.layout.to_sequences(codes)
        totals = []
        with _eval_mode(self):
            for chunk in sequences.split(batch_size):
                chunk = chunk.to(self.device)
                logits = self._next_code_logits(self.lm(input_ids=chunk).logits)
                log_probs = logits.log_softmax(-1).gather(-1, chunk[:, 1:, None]).squeeze(-1)
                totals.append(-log_probs.sum(-1).cpu())
        return torch.cat(totals) if totals else torch.empty(0)

    def _next_code_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits `[B, n, K]` (fp32) of the code after each position but the last: the language
        model's logits restricted to the K codes (BOS is never a code)."""
        return logits[:, :-1, : self.config.codebook_size].float()

    @staticmethod
    def _check_ids(name: str, ids: torch.Tensor, limit: int) -> None:
        """ValueError naming `name` unless `ids` is an integer tensor with values in [0, limit)."""
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer torch.Tensor, got {getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
            raise ValueError(f"{name} must lie in [0, {limit}) (the K codes{' and BOS = K' if name == 'input_ids' else ''}), "
                             f"got values in [{int(ids.min())}, {int(ids.max())}]")

    def bits_per_token(self, codes: torch.Tensor, batch_size: int = 256) -> float:
        """The mean code length in bits per token of `codes` under the prior."""
        nll = self.negative_log_likelihood(codes, batch_size)
        return float(nll.sum()) / (max(nll.numel(), 1) * self.layout.tokens_per_image * math.log(2))

    @torch.no_grad()
    def generate_codes(
        self,
        num_samples: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        batch_size: int = 256,
    ) -> torch.LongTensor:
        """Sample `num_samples` token grids `[N, h, w]` (`[N, h, w, R]` with R codes per position;
        torch.long, in [0, K)) with the language
        model's `generate`: multinomial sampling from the softmax at `temperature`, restricted to the
        `top_k` most likely codes and to the smallest set of probability `top_p` when given, BOS
        suppressed. `seed` makes the draw repeatable without touching torch's global RNG."""
        check_num_samples(num_samples)
        check_positive_int("batch_size", batch_size)
        if seed is not None:
            check_seed(seed)
        if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not (isinstance(top_k, int) and 0 <= top_k)):
            raise ValueError(f"top_k must be None or a non-negative int (0: off), got {top_k!r}")
        if top_p is not None and (isinstance(top_p, bool) or not (isinstance(top_p, (int, float)) and 0 < top_p <= 1)):
            raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")
        settings = GenerationConfig(
            do_sample=True, temperature=float(temperature), top_k=top_k or 0, top_p=float(top_p or 1.0),
            max_new_tokens=self.layout.tokens_per_image, min_new_tokens=self.layout.tokens_per_image,
            bos_token_id=self.config.bos_token_id, pad_token_id=self.config.bos_token_id, eos_token_id=None,
            suppress_tokens=[self.config.bos_token_id],
        )
        samples = []
        with _eval_mode(self), _seeded(seed, self.device):
            for start in range(0, num_samples, batch_size):
                count = min(batch_size, num_samples - start)
                prompt = torch.full((count, 1), self.config.bos_token_id, dtype=torch.long, device=self.device)
                output = self.lm.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=settings)
                samples.append(output[:, 1:].cpu())
        codes = torch.cat(samples).reshape(num_samples, *self.layout.token_shape)
        return check_codes(codes, self.config.codebook_size, self.layout.token_shape, what="generated codes")


@contextmanager
def _eval_mode(module: torch.nn.Module):
    """Run the block with `module` in eval mode (no dropout), then put its former mode back."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Run the block with torch's RNG (CPU, and `device` if it is a GPU) seeded with `seed`, then
    restore the previous state; no-op when `seed` is None."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


__all__ = ["TokenPrior"]
