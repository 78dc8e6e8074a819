"""One small language model over text and image tokens, end to end on a CPU.

The bundled images get short captions made from their labels ("a patch of the coffee photograph");
a `VQMultimodalProcessor` puts a vqtok tokenizer's codes into a text tokenizer's vocabulary; a tiny
GPT-2 learns sequences of both orders (caption then image, image then caption); then, on the
held-out images:

- bits per image token given the caption, against a `TokenPrior` of the same size trained as long
  on the same images' tokens alone (what the caption tells about the image);
- image -> caption: the caption generated for each held-out image, right or wrong;
- caption -> image: images generated for every caption, written as one picture.

    python examples/captions_and_images.py --tokenizer outputs/quickstart/tokenizer --output outputs/multimodal
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from datasets import concatenate_datasets
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

from vqtok import PriorConfig, TokenPrior, VQMultimodalProcessor, tokenize_dataset
from vqtok.data import load_sample_dataset
from vqtok.metrics import save_image_grid
from vqtok.multimodal import resize_embeddings_for_image_tokens
from vqtok.prior.configuration import causal_lm_settings

END_OF_TEXT = "<|endoftext|>"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default="outputs/quickstart/tokenizer", help="the vqtok tokenizer")
    parser.add_argument("--output", default="outputs/multimodal", help="folder for the models, picture and figures")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each language model")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--samples_per_caption", type=int, default=6, help="images generated for each caption")
    parser.add_argument("--eval_images", type=int, default=None, help="held-out images used (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def captioned(split):
    """The split with a `caption` made from each image's label."""
    names = split.features["source"].names
    return split.map(lambda row: {"caption": caption(names[row["source"]])})


def caption(label: str) -> str:
    return f"a patch of the {label.replace('_', ' ')} photograph"


def text_tokenizer(captions: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learnt from the captions (no download needed): the stand-in for a
    pretrained language model's tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(captions, trainers.BpeTrainer(
        vocab_size=320, special_tokens=[END_OF_TEXT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT)


def train(model, sequences: list[list[int]], args, pad_id: int, what: str) -> float:
    """Train `model` (a causal LM) on `sequences` with AdamW and a cosine schedule; returns the seconds
    taken. Each batch is drawn at random; padding is masked out of the loss."""
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, args.steps // 20), args.steps)
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        rows = torch.randint(len(sequences), (args.batch_size,), generator=generator).tolist()
        input_ids, attention_mask = padded([sequences[row] for row in rows], pad_id)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"{what}: step {step + 1}/{args.steps}, loss {loss.item():.4f}", flush=True)
    return time.perf_counter() - start


def codes_of(sequences, processor) -> torch.Tensor:
    """The image codes `[N, h, w]` of token rows holding one image each."""
    return torch.stack([next(part for part in processor.split(row) if isinstance(part, torch.Tensor))
                        for row in sequences["input_ids"]])


def padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, :len(row)], mask[index, :len(row)] = torch.tensor(row), 1
    return ids, mask


@torch.no_grad()
def image_bits(model, sequences: list[list[int]], processor) -> float:
    """Mean bits per image code of `sequences` (each holding one image) under `model`, its next-token
    distribution restricted to the image codes (as generation under the logits processor samples)."""
    model.eval()
    vocabulary, total, count = processor.vocabulary, 0.0, 0
    codes = slice(vocabulary.first_code_id, vocabulary.first_code_id + vocabulary.codebook_size)
    for row in sequences:
        ids = torch.tensor([row])
        logits = model(input_ids=ids).logits[0, :-1, codes].float()
        targets = ids[0, 1:]
        at_codes = vocabulary.is_code(targets)
        log_probs = F.log_softmax(logits[at_codes], dim=-1).gather(-1, (targets[at_codes] - codes.start)[:, None])
        total, count = total - float(log_probs.sum()), count + int(at_codes.sum())
    return total / (count * math.log(2))


@torch.no_grad()
def caption_of(model, image_sequence: list[int], processor, max_new_tokens: int = 24) -> str:
    """The caption the model writes after an image (greedy, stopped at end of text)."""
    model.eval()
    ids = torch.tensor([image_sequence])
    tokenizer = processor.tokenizer
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, logits_processor=[processor.image_logits_processor(
                             max_length=len(image_sequence) + max_new_tokens)])
    return "".join(part for part in processor.decode(out[0, len(image_sequence):]) if isinstance(part, str)).strip()


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)
    data = load_sample_dataset()
    train_split, test_split = captioned(data["train"]), captioned(data["test"])
    if args.eval_images is not None:
        test_split = test_split.select(range(min(args.eval_images, len(test_split))))

    # The processor: the text tokenizer gains the image tokens.
    text = text_tokenizer(train_split["caption"])
    text_vocabulary = len(text)
    processor = VQMultimodalProcessor.for_tokenizers(text, args.tokenizer)
    print(f"text vocabulary {text_vocabulary} + {processor.vocabulary.codebook_size} image codes + 2 markers = "
          f"{len(processor.tokenizer)} tokens; an image is {processor.layout.sequence_length} ids")

    # Sequences of both orders, ready for any causal LM trainer.
    end = END_OF_TEXT
    pairs = {order: {split: tokenize_dataset(data_split, processor, text_column="caption", text_template=template,
                                             desc=f"tokenizing {split} ({order})")
                     for split, data_split in (("train", train_split), ("test", test_split))}
             for order, template in (("caption_first", "{text}<image>" + end), ("image_first", "<image>{text}" + end))}
    training = concatenate_datasets([pairs["caption_first"]["train"], pairs["image_first"]["train"]])["input_ids"]

    # The language model: a "pretrained" text model's embeddings grown for the image tokens.
    settings = causal_lm_settings("gpt2", args.hidden_size, args.num_layers, args.num_heads, dropout=0.1)
    longest = max(len(row) for row in training)
    lm = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in settings.items() if k != "model_type"}, vocab_size=text_vocabulary,
                                    n_positions=longest + 32, bos_token_id=text.eos_token_id,
                                    eos_token_id=text.eos_token_id))
    resize_embeddings_for_image_tokens(lm, processor)
    lm_seconds = train(lm, training, args, text.pad_token_id, "language model")

    # The image-only prior of the same size, trained as long on the same images' codes.
    image_codes = codes_of(pairs["image_first"]["train"], processor)
    prior = TokenPrior(PriorConfig.for_tokenizer(processor.vq_model, architecture="gpt2", hidden_size=args.hidden_size,
                                                 num_layers=args.num_layers, num_heads=args.num_heads, dropout=0.1))
    prior_sequences = prior.layout.to_sequences(image_codes).tolist()
    prior_seconds = train(prior.lm, prior_sequences, args, pad_id=0, what="image-only prior")

    # Held-out figures.
    test_codes = codes_of(pairs["image_first"]["test"], processor)
    captions = test_split["caption"]
    written = [caption_of(lm, processor.layout.to_sequences(codes[None])[0].tolist(), processor) for codes in test_codes]
    majority = max(captions.count(text_caption) for text_caption in set(captions)) / len(captions)
    metrics = {
        "held_out_images": len(captions),
        "bits_per_image_token_given_caption": image_bits(lm, pairs["caption_first"]["test"]["input_ids"], processor),
        "bits_per_image_token_image_first": image_bits(lm, pairs["image_first"]["test"]["input_ids"], processor),
        "bits_per_image_token_image_only_prior": prior.bits_per_token(test_codes),
        "uniform_bits_per_image_token": math.log2(processor.vocabulary.codebook_size),
        "caption_accuracy": sum(a == b for a, b in zip(written, captions)) / len(captions),
        "caption_accuracy_of_the_most_common_caption": majority,
        "training_seconds_language_model": lm_seconds,
        "training_seconds_prior": prior_seconds,
    }

    # Caption -> image for every label: sampled rows beside a real held-out patch.
    labels = sorted(set(train_split["caption"]))
    rows = []
    for index, label in enumerate(labels):
        samples = generate_images(lm, label, processor, args.samples_per_caption, seed=args.seed + index)
        real = next((row["image"] for row in test_split if row["caption"] == label), None)
        rows.append(samples + ([processor.image_processor(real, return_tensors="pt")["pixel_values"][0]] if real else []))
    width = max(len(row) for row in rows)
    grid = torch.stack([tile for row in rows for tile in row + [torch.ones_like(row[0])] * (width - len(row))])
    picture = os.path.join(args.output, "captions_to_images.png")
    save_image_grid(grid, picture, columns=width)

    processor.save_pretrained(os.path.join(args.output, "processor"))
    lm.save_pretrained(os.path.join(args.output, "language_model"))
    with open(os.path.join(args.output, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    print(f"held-out results on {metrics['held_out_images']} images:")
    for name, value in metrics.items():
        print(f"  {name:46s} {value:.4f}" if isinstance(value, float) else f"  {name:46s} {value}")
    print(f"wrote {picture} (a row per caption, in alphabetical order; last column: a held-out patch)")
    return metrics


@torch.no_grad()
def generate_images(model, text: str, processor, count: int, seed: int) -> list[torch.Tensor]:
    """`count` images generated after `text` (sampled at temperature 1, kept whole by the logits
    processor), as `[C, H, W]` tensors in [-1, 1]."""
    model.eval()
    prompt = processor.image_prompt(text, return_tensors="pt")["input_ids"].repeat(count, 1)
    length = prompt.shape[1] + processor.layout.sequence_length - 1
    torch.manual_seed(seed)
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_length=length, do_sample=True, top_k=0, temperature=1.0,
                         pad_token_id=processor.tokenizer.pad_token_id,
                         logits_processor=[processor.image_logits_processor(max_length=length)])
    return [next(part for part in processor.decode(row, output="pt") if isinstance(part, torch.Tensor)) for row in out]


if __name__ == "__main__":
    main()
