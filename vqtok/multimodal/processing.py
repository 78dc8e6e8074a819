"""`VQMultimodalProcessor`: text with images in it -> one id sequence for a language model, and back.

It joins a text tokenizer (any `transformers` tokenizer) and a vqtok tokenizer with its image
processor. The text tokenizer's vocabulary gains the image tokens (`vqtok.multimodal.vocabulary`):
each `<image>` placeholder of a text becomes `<|begin_of_image|>`, the image's codes as tokens and
`<|end_of_image|>`, and the text around it is tokenized as usual. `decode` splits a sequence back
into its text and its images.

Saved with `save_pretrained`, one folder holds everything: the vqtok tokenizer (`config.json`,
`model.safetensors`, so `VQTokenizer` and `AutoModel` load it), the text tokenizer with the image
tokens (`AutoTokenizer` loads it), the image processor and `processor_config.json`, which
`AutoProcessor` reads (after `import vqtok`, or with `trust_remote_code=True`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from huggingface_hub import create_repo
from transformers import AutoTokenizer, BatchFeature
from transformers.processing_utils import ProcessorMixin

from ..auto import VQTokenizer
from ..hub.remote_code import LOADER_MODULE
from ..processing import VQImageProcessor
from ..tokens.tokenization import load_tokenizer_and_processor
from .card import render_processor_card
from .generation import ImageSpanLogitsProcessor
from .vocabulary import BEGIN_OF_IMAGE, END_OF_IMAGE, ImageVocabulary, add_image_tokens

IMAGE_PLACEHOLDER = "<image>"
# Images encoded at once by `__call__`.
_ENCODE_BATCH = 64
# The keywords of `from_pretrained` that say where and how to read the files.
_HUB_KEYWORDS = ("cache_dir", "force_download", "local_files_only", "token", "revision")
_LOADER_LINE = "from vqtok.multimodal import VQMultimodalProcessor  # noqa: F401,E402 - for AutoProcessor\n"


class VQMultimodalProcessor(ProcessorMixin):
    r"""Puts a vqtok tokenizer's image codes into a text tokenizer's vocabulary.

    Args:
        image_processor: the vqtok tokenizer's `VQImageProcessor`.
        tokenizer: the text tokenizer; the image tokens are added to it unless it holds them already.
        vq_model: the vqtok tokenizer (any type: one or several codes per position).
        image_token: the placeholder that marks an image's place in a text (not a token itself).

    >>> processor = VQMultimodalProcessor.for_tokenizers(text_tokenizer, "outputs/quickstart/tokenizer")
    >>> batch = processor(text=["a cat: <image>", "<image> and text"], images=[cat, dog], padding=True,
    ...                   return_tensors="pt")        # input_ids, attention_mask, image_mask
    >>> ids = batch["input_ids"]
    >>> processor.decode(ids[0])                     # ["a cat: ", <PIL image>] (padding dropped)
    """

    def __init__(self, image_processor, tokenizer, vq_model=None, image_token: str = IMAGE_PLACEHOLDER):
        if vq_model is None or not hasattr(vq_model, "encode"):
            raise TypeError(f"vq_model must be a vqtok tokenizer, got {type(vq_model).__name__}")
        if not isinstance(image_token, str) or not image_token:
            raise ValueError(f"image_token must be a non-empty string, got {image_token!r}")
        super().__init__(image_processor, tokenizer)
        self.vq_model = vq_model.eval()
        self.image_token = image_token
        self.vocabulary: ImageVocabulary = add_image_tokens(tokenizer, vq_model.config)

    @classmethod
    def for_tokenizers(cls, text_tokenizer, vq_model, image_processor: VQImageProcessor | None = None,
                       **options) -> VQMultimodalProcessor:
        """A processor from a text tokenizer (or its repo id / path, read with `AutoTokenizer`) and a
        vqtok tokenizer (or its repo id / path); the image processor defaults to the one saved with
        it. `options` as in the class (`image_token`)."""
        if isinstance(text_tokenizer, (str, os.PathLike)):
            text_tokenizer = AutoTokenizer.from_pretrained(text_tokenizer)
        vq_model, image_processor = load_tokenizer_and_processor(vq_model, image_processor)
        return cls(image_processor, text_tokenizer, vq_model, **options)

    @property
    def layout(self):
        """The `TokenLayout` of one image in the sequences (offset codes, the markers as BOS / EOS)."""
        return self.vocabulary.layout

    # --- text and images -> ids ------------------------------------------------------------------
    def __call__(self, text=None, images=None, *, return_tensors=None, **text_kwargs) -> BatchFeature:
        """Token ids of `text` (a string or a list of them) with `images` in place of its `image_token`
        placeholders, in order.

        Args:
            text: the text(s); each placeholder takes the next image.
            images: one image, a list of them (taken in placeholder order across the texts) or one
                list per text; PIL images, arrays or tensors as `VQImageProcessor` takes them.
            return_tensors: `"pt"`, `"np"` or None (lists).
            text_kwargs: for the text tokenizer (`padding`, `truncation`, `max_length`, ...).

        Returns:
            A `BatchFeature` with `input_ids`, `attention_mask` and `image_mask` (1 where an id is an
            image code). A truncation that cuts an image raises `ValueError`.
        """
        return self._encode(text, images, return_tensors, open_image=False, **text_kwargs)

    def image_prompt(self, text, images=None, *, return_tensors=None, **text_kwargs) -> BatchFeature:
        """As `__call__`, each text followed by `<|begin_of_image|>`: the prompt after which a model
        generates an image (under `image_logits_processor`); `input_ids` and `attention_mask` only,
        for `generate(**prompt)`. Batched prompts of several lengths need the text tokenizer's
        `padding_side="left"`."""
        prompt = self._encode(text, images, return_tensors, open_image=True, **text_kwargs)
        del prompt["image_mask"]
        return prompt

    def _encode(self, text, images, return_tensors, open_image: bool, **text_kwargs) -> BatchFeature:
        texts, single = _as_texts(text)
        images = _flat_images(images)
        wanted = sum(piece.count(self.image_token) for piece in texts)
        if wanted != len(images):
            raise ValueError(f"the text holds {wanted} {self.image_token!r} placeholder(s) but {len(images)} image(s) "
                             "were given: give one image per placeholder, in order")
        sequences = iter(self.image_sequences(images))
        opening = BEGIN_OF_IMAGE if open_image else ""
        expanded = [self.join(piece, [next(sequences) for _ in range(piece.count(self.image_token))]) + opening
                    for piece in texts]
        encoding = self.tokenizer(expanded, **text_kwargs)
        for row in encoding["input_ids"]:
            self._image_starts(np.asarray(row[:-1] if open_image else row, dtype=np.int64))
        data = {**encoding, "image_mask": [self.vocabulary.is_code(np.asarray(row, dtype=np.int64)).astype(np.int64).tolist()
                                           for row in encoding["input_ids"]]}
        if single and return_tensors is None:  # as a text tokenizer: one string, one list; tensors keep the batch
            data = {name: values[0] for name, values in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def image_sequences(self, images: Sequence) -> list[list[int]]:
        """The id sequence of each image: `<|begin_of_image|>`, its codes, `<|end_of_image|>`."""
        if not images:
            return []
        sequences = []
        for start in range(0, len(images), _ENCODE_BATCH):
            pixels = self.image_processor(list(images[start:start + _ENCODE_BATCH]), return_tensors="pt")["pixel_values"]
            codes = self.vq_model.encode(pixels.to(self.vq_model.device))
            sequences += self.layout.to_sequences(codes).tolist()
        return sequences

    def join(self, text: str, image_sequences: Sequence[Sequence[int]]) -> str:
        """`text` with its placeholders replaced, in order, by the tokens of `image_sequences` (the
        text the tokenizer then reads)."""
        pieces = text.split(self.image_token)
        if len(pieces) - 1 != len(image_sequences):
            raise ValueError(f"the text holds {len(pieces) - 1} {self.image_token!r} placeholder(s) but "
                             f"{len(image_sequences)} image(s) were given")
        spans = [self.vocabulary.span_text(sequence) for sequence in image_sequences]
        return "".join(piece + span for piece, span in zip(pieces, [*spans, ""]))

    def encode_text(self, text: str, image_sequences: Sequence[Sequence[int]], **text_kwargs) -> list[int]:
        """The ids of one text whose images are already tokenized (`image_sequences`, in order)."""
        return self.tokenizer(self.join(text, image_sequences), **text_kwargs)["input_ids"]

    # --- ids -> text and images ------------------------------------------------------------------
    def split(self, ids) -> list[str | torch.Tensor]:
        """The parts of one id sequence in order: text (decoded, special tokens such as padding
        dropped) and each image's codes `[*token_shape]`. `ValueError` naming the position of an
        image cut short, a marker out of place or a code outside an image."""
        ids = np.asarray(torch.as_tensor(ids).cpu(), dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError(f"decode takes one sequence of ids [L], got shape {list(ids.shape)}; use batch_decode")
        length, parts, position = self.layout.sequence_length, [], 0
        for start in self._image_starts(ids):
            parts += [self._text(ids[position:start]), self.layout.to_codes(ids[None, start:start + length])[0]]
            position = start + length
        parts.append(self._text(ids[position:]))
        return [part for part in parts if not isinstance(part, str) or part]

    def _image_starts(self, ids: np.ndarray) -> np.ndarray:
        """Where each image of `ids` `[L]` opens; `ValueError` (see `split`) unless every image is
        whole and every image token lies inside one."""
        vocabulary, length = self.vocabulary, self.layout.sequence_length
        starts = np.flatnonzero(ids == vocabulary.begin_id)
        inside = np.zeros(len(ids), dtype=bool)
        for start in starts:
            span = ids[start:start + length]
            complete = len(span) == length and span[-1] == vocabulary.end_id and vocabulary.is_code(span[1:-1]).all()
            if not complete:
                raise ValueError(f"the image opened at position {start} is cut short or broken: an image is "
                                 f"{self.layout.tokens_per_image} codes between {BEGIN_OF_IMAGE} and {END_OF_IMAGE}")
            inside[start:start + length] = True
        stray = np.flatnonzero(~inside & (vocabulary.is_code(ids) | (ids == vocabulary.end_id)))
        if len(stray):
            raise ValueError(f"id {ids[stray[0]]} ({vocabulary.token_of(int(ids[stray[0]]))}) at position {stray[0]} "
                             "is an image token outside any image")
        return starts

    def _text(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def decode(self, ids, output: str = "pil") -> list:
        """One sequence's text and images, in order: strings, and each image decoded by the vqtok
        tokenizer, as a PIL image (`output="pil"`) or a `[C, H, W]` tensor in [-1, 1] (`"pt"`)."""
        if output not in ("pil", "pt"):
            raise ValueError(f"output must be 'pil' or 'pt', got {output!r}")
        parts = self.split(ids)
        grids = [part for part in parts if isinstance(part, torch.Tensor)]
        if not grids:
            return parts
        pixels = self.vq_model.decode(torch.stack(grids).to(self.vq_model.device)).cpu()
        pictures = iter(self.image_processor.postprocess(pixels) if output == "pil" else pixels)
        return [next(pictures) if isinstance(part, torch.Tensor) else part for part in parts]

    def batch_decode(self, sequences, output: str = "pil") -> list[list]:
        """`decode` for each sequence of a batch."""
        return [self.decode(sequence, output=output) for sequence in sequences]

    # --- generation ------------------------------------------------------------------------------
    def image_logits_processor(self, max_length: int | None = None) -> ImageSpanLogitsProcessor:
        """The `LogitsProcessor` that keeps generated images whole (see `ImageSpanLogitsProcessor`);
        give `generate`'s `max_length` (prompt included) so that no image is opened without room."""
        vocabulary = self.vocabulary
        return ImageSpanLogitsProcessor(vocabulary.begin_id, vocabulary.end_id, vocabulary.first_code_id,
                                        vocabulary.codebook_size, vocabulary.tokens_per_image, max_length=max_length)

    # --- saving and loading ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        # The vqtok tokenizer is saved as a model beside processor_config.json, not inside it (the
        # mixin would deep-copy it, then fail to write it as JSON).
        model = self.__dict__.pop("vq_model")
        try:
            output = super().to_dict()
        finally:
            self.vq_model = model
        output["auto_map"] = {"AutoProcessor": f"{LOADER_MODULE}.{type(self).__name__}"}
        return output

    def save_pretrained(self, save_directory, push_to_hub: bool = False, repo_id: str | None = None, **kwargs):
        """Write the vqtok tokenizer, the image processor, the text tokenizer (with the image tokens),
        `processor_config.json` and a card (`README.md`) into `save_directory`; with `push_to_hub`,
        upload them to `repo_id` (default: the folder's name; `kwargs` as in `push_to_hub`)."""
        if push_to_hub:
            return self.push_to_hub(repo_id or os.path.basename(os.path.abspath(save_directory)), **kwargs)
        os.makedirs(save_directory, exist_ok=True)
        self.vq_model.save_pretrained(save_directory)
        self.image_processor.save_pretrained(save_directory)
        files = super().save_pretrained(save_directory)
        with open(os.path.join(save_directory, f"{LOADER_MODULE}.py"), "a", encoding="utf-8") as handle:
            handle.write(_LOADER_LINE)
        with open(os.path.join(save_directory, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(render_processor_card(self, repo_id or os.fspath(save_directory)))
        return files

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: bool | str | None = None, revision: str | None = None, create_pr: bool = False):
        """Upload everything `save_pretrained` writes (its card naming the repo) to the Hub repo `repo_id`,
        creating it if needed. Returns the `huggingface_hub.CommitInfo`."""
        full_repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, repo_id=full_repo_id)
            return self._upload_modified_files(folder, full_repo_id, files_timestamps={},
                                               commit_message=commit_message or "Upload vqtok multimodal processor",
                                               token=token, create_pr=create_pr, revision=revision)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> VQMultimodalProcessor:
        """Load a processor saved by `save_pretrained` (a folder or a Hub repo id): the vqtok tokenizer,
        the text tokenizer and the image processor. `kwargs`: where to read (`revision`, `token`,
        `cache_dir`, `local_files_only`, `force_download`), and `image_token`."""
        where = {name: kwargs[name] for name in _HUB_KEYWORDS if kwargs.get(name) is not None}
        processor_dict, _ = cls.get_processor_dict(pretrained_model_name_or_path, **where)
        if processor_dict.get("processor_class") != cls.__name__:
            raise ValueError(f"{pretrained_model_name_or_path} holds no saved {cls.__name__} (its processor_config.json "
                             f"names {processor_dict.get('processor_class')!r}); make one with "
                             f"{cls.__name__}.for_tokenizers and save_pretrained")
        vq_model = VQTokenizer.from_pretrained(pretrained_model_name_or_path, **where)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **where)
        image_processor = VQImageProcessor.from_dict(processor_dict["image_processor"])
        image_token = kwargs.get("image_token", processor_dict.get("image_token", IMAGE_PLACEHOLDER))
        return cls(image_processor, tokenizer, vq_model, image_token=image_token)


def _as_texts(text) -> tuple[list[str], bool]:
    """The texts as a list, and whether one string was given."""
    if isinstance(text, str):
        return [text], True
    if isinstance(text, (list, tuple)) and text and all(isinstance(piece, str) for piece in text):
        return list(text), False
    raise TypeError(f"text must be a string or a non-empty list of strings, got {type(text).__name__}")


def _flat_images(images) -> list:
    """`images` as one flat list (a single image, a list, or one list per text)."""
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        return [images]
    return [image for item in images for image in (item if isinstance(item, (list, tuple)) else [item])]
