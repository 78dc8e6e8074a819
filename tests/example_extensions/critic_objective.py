"""A test-only training objective with a network of its own, written as a new objective is: its
options declared once, the terms it adds to the tokenizer's loss and the update of its network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqtok.losses import ObjectiveUpdate, TrainingObjective
from vqtok.options import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, document_options


@document_options
class CriticObjective(TrainingObjective):
    """A 1x1-conv patch critic D. Its own update minimises the hinge loss
    critic_loss = mean(relu(1 - D(x))) + mean(relu(1 + D(sg x^))); the tokenizer's loss gains
    critic_generator_loss = weight * -mean(D(x^)), x^ the reconstruction."""

    name = "test-critic"
    options = {
        "weight": NON_NEGATIVE(0.1, "Weight of the generator term in the tokenizer's loss."),
        "learning_rate": POSITIVE(1e-2, "The critic's learning rate."),
        "start_step": NON_NEGATIVE_INT(0, "The first step of the critic's updates."),
    }

    def __init__(self, **options):
        super().__init__()
        self.set_options(options)
        self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))  # state outside the critic

    def setup(self, tokenizer):
        channels = tokenizer.config.in_channels
        self.critic = nn.Sequential(nn.Conv2d(channels, 4, 1), nn.SiLU(), nn.Conv2d(4, 1, 1))

    def tokenizer_losses(self, inputs):
        return {"critic_generator_loss": -self.weight * self.critic(inputs.output.reconstruction).mean()}

    def updates(self):
        return [ObjectiveUpdate("critic", self.critic, self.critic_loss, self.learning_rate, start_step=self.start_step)]

    def critic_loss(self, critic, inputs):
        self.critic_updates.add_(1)
        real = critic(inputs.pixel_values)
        fake = critic(inputs.output.reconstruction.detach())
        return {"critic_loss": F.relu(1 - real).mean() + F.relu(1 + fake).mean()}
