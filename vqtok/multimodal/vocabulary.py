"""The image tokens a text tokenizer's vocabulary gains: one token per code of the image tokenizer and
the two markers that open and close an image.

The K code tokens `<|vq_0|>`, ..., `<|vq_{K-1}|>` get consecutive ids, from `first_code_id` on, so
that a code c is the id `first_code_id + c` (a position's R codes share the K tokens, level 0 first,
as in `TokenLayout`). An image is `<|begin_of_image|>`, its h*w*R codes in row-major order, then
`<|end_of_image|>`: every image of a tokenizer has the same grid, so the markers need no size. All
are added as special tokens, so the text tokenizer never splits them and `skip_special_tokens`
drops them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tokens import TokenLayout

BEGIN_OF_IMAGE = "<|begin_of_image|>"
END_OF_IMAGE = "<|end_of_image|>"


def code_token(code: int) -> str:
    """The text token of image code `code`."""
    return f"<|vq_{code}|>"


@dataclass(frozen=True)
class ImageVocabulary:
    """Where the image tokens sit in a text tokenizer's vocabulary, and how an image is laid out.

    Args:
        layout: the image's `TokenLayout`, whose `id_offset` is the first code's id and whose BOS and
            EOS are the two markers.
    """

    layout: TokenLayout

    @property
    def first_code_id(self) -> int:
        return self.layout.id_offset

    @property
    def codebook_size(self) -> int:
        return self.layout.codebook_size

    @property
    def begin_id(self) -> int:
        return self.layout.bos_token_id

    @property
    def end_id(self) -> int:
        return self.layout.eos_token_id

    @property
    def tokens_per_image(self) -> int:
        """The codes of one image (h*w*R), the markers not counted."""
        return self.layout.tokens_per_image

    def is_code(self, ids):
        """Whether each id (a tensor or an array) is an image code's."""
        return (ids >= self.first_code_id) & (ids < self.first_code_id + self.codebook_size)

    def span_text(self, sequence) -> str:
        """The text whose tokens are the image id sequence `sequence` (markers included)."""
        return "".join(self.token_of(int(token)) for token in sequence)

    def token_of(self, token_id: int) -> str:
        if token_id == self.begin_id:
            return BEGIN_OF_IMAGE
        if token_id == self.end_id:
            return END_OF_IMAGE
        return code_token(token_id - self.first_code_id)


def add_image_tokens(text_tokenizer, image_tokenizer_config) -> ImageVocabulary:
    """Add the image tokens of a vqtok tokenizer's config (K codes, its grid and codes per position)
    to `text_tokenizer`, unless it holds them already (a saved processor's tokenizer), and return
    where they are. `ValueError` when the tokenizer holds image tokens that do not fit: tokens for
    another K, or code tokens whose ids are not consecutive."""
    codebook_size = image_tokenizer_config.codebook_size
    vocabulary = text_tokenizer.get_vocab()
    if code_token(codebook_size) in vocabulary:
        raise ValueError(
            f"the text tokenizer already holds image token {code_token(codebook_size)!r}, so it was made for an image "
            f"tokenizer of more than K={codebook_size} codes; start from the text tokenizer without image tokens"
        )
    wanted = [BEGIN_OF_IMAGE, END_OF_IMAGE, *(code_token(code) for code in range(codebook_size))]
    missing = [token for token in wanted if token not in vocabulary]
    if missing:
        text_tokenizer.add_tokens(missing, special_tokens=True)
    begin_id, end_id, *code_ids = text_tokenizer.convert_tokens_to_ids(wanted)
    first = code_ids[0]
    if code_ids != list(range(first, first + codebook_size)):
        raise ValueError(
            f"the text tokenizer's image code tokens {code_token(0)} ... {code_token(codebook_size - 1)} do not have "
            "consecutive ids (some were there before the others were added); start from the text tokenizer without "
            "image tokens"
        )
    return ImageVocabulary(TokenLayout.for_tokenizer(image_tokenizer_config, id_offset=first, bos_token_id=begin_id,
                                                     eos_token_id=end_id))
