"""The multimodal processor's card: `model_cards/multimodal_card.md` rendered with huggingface_hub's
`ModelCard`: what the repository holds and where the image tokens sit in the vocabulary."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from ..hub.card_fields import card_template, token_shape_fields

MULTIMODAL_TEMPLATE_PATH = card_template("multimodal_card.md")


def render_processor_card(processor, repo_id: str) -> str:
    """The card of a `VQMultimodalProcessor` saved in (or pushed to) `repo_id`."""
    vocabulary, layout, config = processor.vocabulary, processor.layout, processor.vq_model.config
    card_data = ModelCardData(library_name="vqtok", tags=["vqtok", "image-tokens", "multimodal"])
    text_tokenizer = processor.tokenizer
    return str(ModelCard.from_template(
        card_data,
        template_path=str(MULTIMODAL_TEMPLATE_PATH),
        title=repo_id,
        repo_id=repo_id,
        model_type=config.model_type,
        codebook_size=vocabulary.codebook_size,
        **token_shape_fields(layout.grid, layout.codes_per_position),
        text_tokenizer=f"`{type(text_tokenizer).__name__}`",
        text_vocabulary=len(text_tokenizer) - vocabulary.codebook_size - 2,
        vocabulary=len(text_tokenizer),
        begin_id=vocabulary.begin_id,
        end_id=vocabulary.end_id,
        first_code_id=vocabulary.first_code_id,
        last_code_id=vocabulary.first_code_id + vocabulary.codebook_size - 1,
        last_code=vocabulary.codebook_size - 1,
        tokens_per_image=vocabulary.tokens_per_image,
        codes_per_position=layout.codes_per_position,
        sequence_length=layout.sequence_length,
        image_token=processor.image_token,
    ))
