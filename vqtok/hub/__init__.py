"""The Hub round trip: safe loading (safetensors only, clear errors), saving and publishing with a
model card."""

from .model_card import render_model_card, save_model_card
from .pretrained import SafeHubMixin

__all__ = ["SafeHubMixin", "render_model_card", "save_model_card"]
