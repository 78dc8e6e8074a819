"""Generating text and images with one causal language model: room in its embeddings for the image
tokens, and a `LogitsProcessor` under which every generated image decodes."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class ImageSpanLogitsProcessor(LogitsProcessor):
    """Keeps the images a language model generates whole.

    Inside an image (after `<|begin_of_image|>`), only image codes may follow until the image holds
    `tokens_per_image` of them; then only `<|end_of_image|>`. Outside an image, neither codes nor
    `<|end_of_image|>` may be generated. With `max_length` (the whole sequence's, prompt included),
    an image is only opened where it fits. So every image in the output is complete and decodes,
    whatever the model's scores (a randomly initialised model included).

    Args:
        begin_id / end_id: the ids of `<|begin_of_image|>` and `<|end_of_image|>`.
        first_code_id, codebook_size: image codes are the ids [first_code_id, first_code_id + K).
        tokens_per_image: the codes of one image (h*w*R).
        max_length: the longest sequence `generate` will produce (None: no limit is enforced here).
    """

    def __init__(self, begin_id: int, end_id: int, first_code_id: int, codebook_size: int, tokens_per_image: int,
                 max_length: int | None = None):
        self.begin_id, self.end_id = begin_id, end_id
        self.codes = slice(first_code_id, first_code_id + codebook_size)
        self.tokens_per_image, self.max_length = tokens_per_image, max_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        last_begin = torch.where(input_ids == self.begin_id, positions, -1).amax(dim=1)
        last_end = torch.where(input_ids == self.end_id, positions, -1).amax(dim=1)
        inside = last_begin > last_end
        codes_so_far = length - 1 - last_begin
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        code_next = inside & (codes_so_far < self.tokens_per_image)
        allowed[code_next, self.codes] = True
        allowed[inside & ~code_next, self.end_id] = True
        allowed[~inside] = True
        allowed[~inside, self.codes] = False
        allowed[~inside, self.end_id] = False
        if self.max_length is not None and self.max_length - length < self.tokens_per_image + 2:
            allowed[~inside, self.begin_id] = False  # no room for a whole image
        return scores.masked_fill(~allowed, float("-inf"))


def resize_embeddings_for_image_tokens(model, processor) -> None:
    """Give a causal language model `model` rows for every token of `processor.tokenizer` (the image
    tokens included): its input (and untied output) embeddings grow to `len(tokenizer)`, each new row
    the mean of the old ones, the usual start for added tokens. Nothing changes when it has the rows
    already."""
    old = model.get_input_embeddings().weight.shape[0]
    new = len(processor.tokenizer)
    if new <= old:
        return
    model.resize_token_embeddings(new, mean_resizing=False)
    with torch.no_grad():
        inputs = model.get_input_embeddings().weight
        inputs[old:] = inputs[:old].mean(dim=0)
        output = model.get_output_embeddings()
        if output is not None and output.weight.data_ptr() != inputs.data_ptr():
            output.weight[old:] = output.weight[:old].mean(dim=0)
            if getattr(output, "bias", None) is not None:
                output.bias[old:] = output.bias[:old].mean()
