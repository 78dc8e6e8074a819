"""`VQMultimodalProcessor`: text and images -> one id sequence of a text tokenizer's vocabulary -> text
and images again, for every tokenizer type; generation that always closes its images; the embedding
helper; saving, loading through `AutoProcessor` and the Hub; image-text datasets tokenized."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, Value
from test_contract import TYPES, tiny_tokenizer
from tiny_data import tiny_text_tokenizer
from transformers import AutoProcessor, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from vqtok import VQImageProcessor, VQMultimodalProcessor, VQTokenizer, load_tokenized, tokenize_dataset, tokenize_stream
from vqtok.multimodal import BEGIN_OF_IMAGE, END_OF_IMAGE, ImageSpanLogitsProcessor, code_token, resize_embeddings_for_image_tokens

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = ["a red square", "the blue sky at noon", "two cats, one dog", "héllo wörld: ünïcode"]
END = "<|endoftext|>"


def text_tokenizer():
    return tiny_text_tokenizer(CAPTIONS)


def pictures(count: int, size: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def processor_for(model) -> VQMultimodalProcessor:
    return VQMultimodalProcessor(VQImageProcessor.for_tokenizer(model.config), text_tokenizer(), model)


def codes_of(processor, images) -> torch.Tensor:
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return processor.vq_model.encode(pixels)


@pytest.fixture(scope="module")
def vq_processor():
    return processor_for(tiny_tokenizer("vqtok-vq"))


# --- the layout, by hand --------------------------------------------------------------------------

def test_an_image_is_begin_its_codes_offset_into_the_vocabulary_then_end(vq_processor):
    processor = vq_processor
    text_size = len(text_tokenizer())
    assert len(processor.tokenizer) == text_size + 2 + 8  # two markers, K = 8 codes
    begin, end = processor.tokenizer.convert_tokens_to_ids([BEGIN_OF_IMAGE, END_OF_IMAGE])
    first = processor.tokenizer.convert_tokens_to_ids(code_token(0))
    assert (begin, end, first) == (text_size, text_size + 1, text_size + 2)
    image = pictures(1)
    codes = codes_of(processor, image)[0]  # [4, 4]: an 8x8 image at f = 2
    ids = processor(text="<image>", images=image)["input_ids"]
    assert ids == [begin, *(first + int(code) for code in codes.flatten()), end]
    text_ids = processor.tokenizer("sky ")["input_ids"]
    assert processor(text="sky <image>", images=image)["input_ids"] == [*text_ids, *ids]
    assert processor(text="<image>", images=image, return_tensors="pt")["input_ids"].tolist() == [ids]  # batched


# --- the round trip, every type -------------------------------------------------------------------

@pytest.mark.parametrize("model_type, backbone", [(name, "conv") for name in TYPES] + [("vqtok-rvq", "titok")])
def test_text_and_images_round_trip_exactly_for_every_type(model_type, backbone):
    processor = processor_for(tiny_tokenizer(model_type, backbone=backbone))
    texts = ["a red square: <image> and <image>.", "<image>", "no image at all, héllo", "<image> the blue sky"]
    images = pictures(4, seed=1)
    batch = processor(text=texts, images=images, padding=True, return_tensors="pt")
    codes = codes_of(processor, images)
    tokens = processor.layout.tokens_per_image
    assert batch["image_mask"].sum(1).tolist() == [2 * tokens, tokens, 0, tokens]
    assert batch["image_mask"].dtype == torch.long and not (batch["image_mask"].bool() & ~batch["attention_mask"].bool()).any()
    images_left = iter(range(4))
    for row, text in enumerate(texts):
        parts = processor.split(batch["input_ids"][row])
        expected = [piece for piece in text.replace("<image>", "\0<image>\0").split("\0") if piece]
        assert [part if isinstance(part, str) else "<image>" for part in parts] == expected
        for part in parts:
            if isinstance(part, torch.Tensor):
                assert torch.equal(part, codes[next(images_left)])  # R codes per position included
    decoded = processor.decode(batch["input_ids"][0], output="pt")
    assert torch.equal(torch.stack([decoded[1], decoded[3]]), processor.vq_model.decode(codes[:2]))
    pil = processor.batch_decode(batch["input_ids"][:2])
    assert [np.asarray(image).tobytes() for image in (pil[0][1], pil[1][0])] == [
        np.asarray(image).tobytes() for image in processor.image_processor.postprocess(processor.vq_model.decode(codes[[0, 2]]))]


# --- generation -----------------------------------------------------------------------------------

def test_the_logits_processor_allows_codes_then_the_end_inside_an_image_and_neither_outside():
    begin, end, first, K, T = 10, 11, 12, 4, 3
    rule = ImageSpanLogitsProcessor(begin, end, first, K, T)
    rows = torch.tensor([[1, 2, 3, 4, begin, 12],         # inside, one code so far
                         [1, 2, begin, 12, 13, 14],        # inside, T codes: only the end
                         [begin, 12, 13, 14, end, 1]])     # outside: text or a new image
    allowed = torch.isfinite(rule(rows, torch.zeros(3, 16)))
    assert allowed[0].nonzero().flatten().tolist() == [12, 13, 14, 15]
    assert allowed[1].nonzero().flatten().tolist() == [end]
    assert allowed[2].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, begin]
    for max_length, room in ((11, True), (10, False)):  # an image needs T + 2 = 5 more ids after these 6
        allowed = torch.isfinite(ImageSpanLogitsProcessor(begin, end, first, K, T, max_length)(rows, torch.zeros(3, 16)))
        assert bool(allowed[2, begin]) == room and allowed[0].nonzero().flatten().tolist() == [12, 13, 14, 15]


@pytest.mark.parametrize("model_type", ["vqtok-vq", "vqtok-rvq"])
def test_a_random_language_model_under_the_logits_processor_always_yields_decodable_images(model_type):
    processor = processor_for(tiny_tokenizer(model_type))
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(text_tokenizer()), n_embd=16, n_layer=1, n_head=2, n_positions=256))
    resize_embeddings_for_image_tokens(lm, processor)
    processor.tokenizer.padding_side = "left"
    text = processor.tokenizer(["a red square", "sky"], padding=True, return_tensors="pt")["input_ids"]
    prompts = {"caption -> image": processor.image_prompt(["a red square", "sky"], padding=True, return_tensors="pt")["input_ids"],
               "free": text}
    assert (prompts["caption -> image"][:, -1] == processor.vocabulary.begin_id).all()
    images = 0
    for seed in range(3):
        for prompt in prompts.values():
            torch.manual_seed(seed)
            out = lm.generate(prompt, attention_mask=torch.ones_like(prompt), max_length=3 * processor.layout.sequence_length,
                              do_sample=True, top_k=0, pad_token_id=processor.tokenizer.pad_token_id,
                              logits_processor=[processor.image_logits_processor(max_length=3 * processor.layout.sequence_length)])
            for row in out:
                parts = processor.decode(row, output="pt")
                images += sum(isinstance(part, torch.Tensor) for part in parts)
                assert all(part.shape == (3, 8, 8) for part in parts if isinstance(part, torch.Tensor))
    assert images >= 6  # every caption -> image prompt closed its image
    torch.manual_seed(0)
    unguided = lm.generate(prompts["caption -> image"], attention_mask=torch.ones_like(prompts["caption -> image"]),
                           max_new_tokens=processor.layout.sequence_length, do_sample=True, top_k=0,
                           pad_token_id=processor.tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="cut short or broken"):
        processor.decode(unguided[0])  # without it, the same model breaks its images


def test_resizing_for_image_tokens_starts_new_rows_at_the_mean_and_keeps_the_old_ones(vq_processor):
    for tied in (True, False):
        torch.manual_seed(0)
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(text_tokenizer()), n_embd=8, n_layer=1, n_head=2,
                                        tie_word_embeddings=tied))
        old_inputs = lm.get_input_embeddings().weight.detach().clone()
        old_outputs = lm.get_output_embeddings().weight.detach().clone()
        resize_embeddings_for_image_tokens(lm, vq_processor)
        inputs, outputs = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
        count = len(old_inputs)
        assert inputs.shape[0] == len(vq_processor.tokenizer) and outputs.shape[0] == len(vq_processor.tokenizer)
        assert torch.equal(inputs[:count], old_inputs) and torch.equal(outputs[:count], old_outputs)
        assert torch.allclose(inputs[count:], old_inputs.mean(0).expand(inputs.shape[0] - count, -1))
        assert torch.allclose(outputs[count:], old_outputs.mean(0).expand(outputs.shape[0] - count, -1))
        assert (inputs.data_ptr() == outputs.data_ptr()) == tied


# --- saving and loading ---------------------------------------------------------------------------

def test_save_pretrained_then_auto_processor_and_every_auto_class_load_it(vq_processor, tmp_path):
    vq_processor.save_pretrained(tmp_path / "processor")
    loaded = AutoProcessor.from_pretrained(tmp_path / "processor")
    assert isinstance(loaded, VQMultimodalProcessor)
    texts, images = ["a red square: <image>", "<image> sky"], pictures(2)
    expected = vq_processor(text=texts, images=images, padding=True, return_tensors="pt")
    assert torch.equal(loaded(text=texts, images=images, padding=True, return_tensors="pt")["input_ids"], expected["input_ids"])
    assert len(AutoTokenizer.from_pretrained(tmp_path / "processor")) == len(vq_processor.tokenizer)
    assert torch.equal(VQTokenizer.from_pretrained(tmp_path / "processor").encode(torch.zeros(1, 3, 8, 8)),
                       vq_processor.vq_model.encode(torch.zeros(1, 3, 8, 8)))
    card = (tmp_path / "processor" / "README.md").read_text()
    assert f"| `<|begin_of_image|>` | {vq_processor.vocabulary.begin_id} |" in card and "library_name: vqtok" in card
    code = (f"from transformers import AutoProcessor; p = AutoProcessor.from_pretrained({str(tmp_path / 'processor')!r}, "
            "trust_remote_code=True); print(type(p).__name__, p.layout.sequence_length)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["VQMultimodalProcessor", "18"], done.stderr[-3000:]


def test_push_to_hub_then_auto_processor_loads_it_by_name(vq_processor, local_hub):
    vq_processor.push_to_hub("someone/vq-multimodal")
    loaded = AutoProcessor.from_pretrained("someone/vq-multimodal")
    ids = vq_processor(text="sky <image>", images=pictures(1))["input_ids"]
    assert loaded(text="sky <image>", images=pictures(1))["input_ids"] == ids
    assert local_hub.unknown_requests == []


# --- image-text datasets ----------------------------------------------------------------------------

def captioned(count: int = 5) -> Dataset:
    return Dataset.from_dict({"image": [Image().encode_example(picture) for picture in pictures(count)],
                              "caption": (CAPTIONS * 2)[:count]},
                             features=Features({"image": Image(), "caption": Value("string")}))


def test_tokenize_dataset_writes_each_caption_with_its_image_both_ways_and_streamed_alike(vq_processor, tmp_path):
    data = captioned()
    for template, text_of in (("{text}<image>" + END, lambda caption: caption + "<image>" + END),
                              ("<image>{text}", lambda caption: "<image>" + caption)):
        rows = tokenize_dataset(data, vq_processor, text_column="caption", text_template=template, batch_size=2)
        assert rows.column_names == ["caption", "input_ids"]
        for index, row in enumerate(rows):
            image = np.asarray(data[index]["image"])
            assert row["input_ids"] == vq_processor(text=text_of(row["caption"]), images=[image])["input_ids"]
    tokenize_stream(data.to_iterable_dataset(), vq_processor, tmp_path / "tokens", text_column="caption",
                    text_template="<image>{text}", rows_per_shard=2)
    streamed, layout = load_tokenized(tmp_path / "tokens")
    assert streamed["train"]["input_ids"] == rows["input_ids"] and layout == vq_processor.layout


def test_interleaving_options_that_do_not_fit_are_named(vq_processor, tmp_path):
    data = captioned(2)
    model = vq_processor.vq_model
    with pytest.raises(ValueError, match="text_column='caption' needs a vqtok.VQMultimodalProcessor"):
        tokenize_dataset(data, model, text_column="caption")
    with pytest.raises(ValueError, match=r"name its column \(text_column\)"):
        tokenize_dataset(data, vq_processor)
    with pytest.raises(ValueError, match=r"no column 'text' \(text_column\); columns: \['image', 'caption'\]"):
        tokenize_dataset(data, vq_processor, text_column="text")
    with pytest.raises(ValueError, match="text_template must hold '{text}' and one '<image>'"):
        tokenize_dataset(data, vq_processor, text_column="caption", text_template="{text}")
    with pytest.raises(ValueError, match=r"\['id_offset'\] cannot be given with a VQMultimodalProcessor"):
        tokenize_dataset(data, vq_processor, text_column="caption", id_offset=5)
    blank = Dataset.from_dict({"image": data["image"], "caption": ["fine", None]}, features=data.features)
    with pytest.raises(ValueError, match="row 1: its text is None, not a string"):
        tokenize_dataset(blank, vq_processor, text_column="caption")


# --- bad input --------------------------------------------------------------------------------------

def test_bad_input_is_named(vq_processor):
    processor = vq_processor
    with pytest.raises(ValueError, match=r"holds 2 '<image>' placeholder\(s\) but 1 image\(s\)"):
        processor(text="<image> and <image>", images=pictures(1))
    with pytest.raises(ValueError, match=r"the image opened at position \d+ is cut short"):
        processor(text="a red square <image>", images=pictures(1), truncation=True, max_length=10)
    ids = processor(text="sky <image> sky", images=pictures(1))["input_ids"]
    begin = ids.index(processor.vocabulary.begin_id)
    with pytest.raises(ValueError, match=f"the image opened at position {begin} is cut short or broken"):
        processor.decode(ids[:begin + 5])
    with pytest.raises(ValueError, match=rf"at position {begin} is an image token outside any image"):
        processor.decode(ids[:begin] + ids[begin + 1:])
    with pytest.raises(TypeError, match="text must be a string or a non-empty list of strings"):
        processor(text=None, images=pictures(1))
    with pytest.raises(ValueError, match="output must be 'pil' or 'pt'"):
        processor.decode(ids, output="np")


def test_a_text_tokenizer_made_for_a_larger_codebook_is_refused(vq_processor):
    tokenizer = text_tokenizer()
    tokenizer.add_tokens([code_token(code) for code in range(32)], special_tokens=True)
    with pytest.raises(ValueError, match=r"holds image token '<\|vq_8\|>', so it was made for an image tokenizer of "
                                         r"more than K=8 codes"):
        VQMultimodalProcessor(vq_processor.image_processor, tokenizer, vq_processor.vq_model)
