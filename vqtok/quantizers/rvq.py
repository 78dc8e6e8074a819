"""Residual vector quantization (Zeghidour et al. 2021, SoundStream; Lee et al. 2022, RQ-VAE): R
nearest-code quantizers in a row, each coding what the ones before it left; a position's token is its
R ids, level 0 first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..options import FLAG, Option, UNIT_INTERVAL, document_options
from ..parallel.collectives import broadcast_
from .base import CodeSpace, Quantizer, QuantizerOutput
from .codebook import LEARNT_CODEBOOK_OPTIONS, Codebook
from .functional import CHUNK_OPTIONS, COMMITMENT_COST, ROTATION_OPTIONS, code_histogram, straight_through, usage_stats

# Enough for every residual quantizer in the literature (SoundStream: 8-32, RQ-VAE: 4-8).
MAX_DEPTH = 64


@document_options
class ResidualVectorQuantizer(Quantizer):
    """R-level residual quantizer with EMA (or gradient) codebooks.

    Training forward, on rows z (fp32): r_0 = z; for level l = 0 .. R-1,
      k_l = argmin_k ||r_l - e^l_k||^2,  r_{l+1} = r_l - e^l_{k_l};
    the decoder receives z + sg(z_q - z), z_q = sum_l e^l_{k_l} (or the rotation trick from z to z_q);
      commitment_loss = beta * sum_l mean((r_l - sg e^l_{k_l})^2)   (= sum_l ||z - sg(partial sum up to l)||^2);
      codebook_loss = sum_l mean((e^l_{k_l} - sg r_l)^2)            (only when `use_ema=False`).
    Each level's codebook is a `Codebook` (k-means start on its level's residuals, EMA statistics,
    dead-code restarts), or one codebook serves every level (`shared_codebook`). With quantizer
    dropout, a training batch uses only its first n levels, n uniform in 1..R (drawn on rank 0), so
    that the first levels alone also decode well; ids are still given for all R levels.
    Ids are `[N, R]`, level 0 first, every level in [0, K).
    """

    options = {
        "num_quantizers": Option(int, low=1, high=MAX_DEPTH)(4, "R, the levels: codes per position."),
        "shared_codebook": FLAG(False, "One codebook for every level instead of one per level."),
        "quantizer_dropout": UNIT_INTERVAL(0.0, (
            "Probability that a training batch uses only its first n levels, n uniform in 1..R (SoundStream's "
            "quantizer dropout; 0 switches it off)."
        ), training_only=True),
        "commitment_cost": COMMITMENT_COST.documented("beta, the weight of the commitment loss, summed over levels."),
        **LEARNT_CODEBOOK_OPTIONS,
        **ROTATION_OPTIONS,
        **CHUNK_OPTIONS,
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        count = 1 if self.shared_codebook else self.num_quantizers
        self.codebooks = nn.ModuleList(
            Codebook(self.codebook_size, self.dim, trainable=not self.use_ema, ema=self.use_ema,
                     ema_decay=self.ema_decay, ema_epsilon=self.ema_epsilon, track_usage=True, chunk_rows=self.chunk_rows)
            for _ in range(count)
        )

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        return replace(super().code_space(options, codebook_size, dim, where), codes_per_position=options["num_quantizers"])

    def level_codebook(self, level: int) -> Codebook:
        """The codebook of level `level` (the one shared codebook when `shared_codebook`)."""
        return self.codebooks[0 if self.shared_codebook else level]

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Level 0's codes `[n, D]` for ids `[n]` (all K when None)."""
        table = self.codebooks[0].weight
        return (table if ids is None else table[ids]).float()

    def _embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return sum(self.level_codebook(level).weight[ids[:, level]].float() for level in range(self.num_quantizers))

    def needs_initialization(self) -> bool:
        return not bool(self.codebooks[0].initialized)

    @torch.no_grad()
    def initialize(self, rows: torch.Tensor) -> None:
        """k-means of each level's codebook on that level's residuals (the shared one on z itself)."""
        residual = rows
        iters = self.kmeans_iters if self.kmeans_init else None
        for level in range(len(self.codebooks)):
            codebook = self.codebooks[level]
            codebook.initialize(residual, iters)
            residual = residual - codebook.weight[codebook.nearest(residual)]

    def _levels(self, rows: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(ids `[N, R]`, each level's residual r_l, each level's chosen codes), residuals detached."""
        residual, ids, residuals, codes = rows.detach(), [], [], []
        for level in range(self.num_quantizers):
            codebook = self.level_codebook(level)
            level_ids = codebook.nearest(residual)
            level_codes = codebook.weight[level_ids]
            ids.append(level_ids)
            residuals.append(residual)
            codes.append(level_codes)
            residual = residual - level_codes.detach()
        return torch.stack(ids, dim=1), residuals, codes

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self._levels(rows)[0]

    def _levels_in_use(self) -> int:
        """How many levels this training batch uses: all, or with quantizer dropout a shared draw."""
        if not self.training or self.quantizer_dropout <= 0:
            return self.num_quantizers
        draw = torch.rand(()) < self.quantizer_dropout
        depth = torch.randint(1, self.num_quantizers + 1, ()) if draw else torch.tensor(self.num_quantizers)
        return int(broadcast_(depth.to(self.codebooks[0].weight.device)))

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        ids, residuals, codes = self._levels(rows)
        used = self._levels_in_use()
        total = sum(codes[:used])
        losses = {"commitment_loss": self.commitment_cost * sum(F.mse_loss(r, c.detach()) for r, c in zip(residuals[:used], codes[:used]))}
        if not self.use_ema:
            losses["codebook_loss"] = sum(F.mse_loss(c, r) for r, c in zip(residuals[:used], codes[:used]))
        quantized = straight_through(rows, total, self.rotation_trick)
        stats = usage_stats(code_histogram(ids, self.codebook_size))
        stats["levels_used"] = rows.new_tensor(float(used))
        if self.training:
            stats["restarted_codes"] = self._update_codebooks(ids[:, :used], residuals[:used])
        return QuantizerOutput(quantized, ids, losses, stats)

    @torch.no_grad()
    def _update_codebooks(self, ids: torch.Tensor, residuals: list[torch.Tensor]) -> torch.Tensor:
        """EMA steps and dead-code restarts of the levels in use, each codebook with its levels' counts
        and residual sums (summed over processes). Returns the codes restarted."""
        restarted = ids.new_zeros((), dtype=torch.float32)
        books = [[level] for level in range(len(residuals))] if not self.shared_codebook else [list(range(len(residuals)))]
        for levels in books:
            codebook = self.level_codebook(levels[0])
            level_ids = torch.cat([ids[:, level] for level in levels])
            level_rows = torch.cat([residuals[level] for level in levels])
            counts = code_histogram(level_ids, self.codebook_size)
            restarted = restarted + codebook.learn_from_batch(level_ids, level_rows, counts, self.dead_code_threshold)
        return restarted

    def extra_repr(self) -> str:
        shared = ", shared_codebook" if self.shared_codebook else ""
        return f"codebook_size={self.codebook_size}, dim={self.dim}, num_quantizers={self.num_quantizers}{shared}"
