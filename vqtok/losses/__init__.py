"""Training objectives: the decoder likelihoods a tokenizer type trains with (`likelihoods`, read by
the type's `reconstruction_losses`), and the objectives with networks of their own (perceptual,
adversarial) that a run config switches on in its `objectives` section (`base`).

Every objective is registered below, in one visible place.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..options import Registry
from .adversarial import AdversarialObjective, PatchDiscriminator
from .base import ObjectiveInputs, ObjectiveUpdate, TrainingObjective
from .perceptual import PerceptualObjective

OBJECTIVES = Registry("training objective", "run config section", "objectives")
"""Every training objective a run config can switch on, by name."""


def register_objective(objective_class: type[TrainingObjective]) -> type[TrainingObjective]:
    """Make `objective_class` available under its `name` in a run config's `objectives` section."""
    return OBJECTIVES.register(objective_class)


def build_objectives(settings: Mapping | None) -> dict[str, TrainingObjective]:
    """One objective per name switched on in `settings` (name -> options), in their order, except
    that those reading the other objectives' terms (`reads_other_terms`) come after the rest."""
    built = OBJECTIVES.build(settings)
    return dict(sorted(built.items(), key=lambda item: item[1].reads_other_terms))


# Every training objective is registered here.
register_objective(PerceptualObjective)
register_objective(AdversarialObjective)

__all__ = [
    "OBJECTIVES",
    "AdversarialObjective",
    "PatchDiscriminator",
    "PerceptualObjective",
    "ObjectiveInputs",
    "ObjectiveUpdate",
    "TrainingObjective",
    "build_objectives",
    "register_objective",
]
