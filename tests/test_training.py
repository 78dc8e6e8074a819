"""The training loop: exact resume from checkpoints, the seeded data stream, and the command line
end to end (overrides, checkpoints, TensorBoard logs, saved tokenizer with training metadata)."""

import glob
import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from huggingface_hub import ModelCard
from tiny_data import run_interrupted_after, tiny_images

from vqtok import VQConfig, VQImageProcessor, VQTokenizer
from vqtok.data import pixel_dataset
from vqtok.training import TrainingArguments, train_tokenizer
from vqtok.training.checkpoints import list_checkpoints, resolve_checkpoint
from vqtok.training.in_memory_data import ProcessBatches, SampleStream

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]




def tiny_config(**overrides) -> VQConfig:
    values = dict(image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4), latent_dim=8, codebook_size=16)
    return VQConfig(**{**values, **overrides})


def tiny_args(output_dir, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir), max_steps=16, batch_size=8, learning_rate=3e-3, warmup_steps=3,
        gradient_accumulation_steps=2, log_every=4, report_to="none", seed=0,
    )
    return TrainingArguments(**{**values, **overrides})


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    train_set = pixel_dataset(tiny_images(), 16, 3, augment=True)

    def run(output_dir, init_seed, **overrides):
        set_seed(init_seed)
        # A high restart threshold: dead-code restarts (global RNG) happen after the checkpoint too.
        model = VQTokenizer.from_config(tiny_config(dead_code_threshold=5.0))
        train_tokenizer(model, train_set, None, tiny_args(output_dir, **overrides))
        return model

    reference = run(tmp_path / "straight", 0)

    # Stop right after the step-9 checkpoint, as a killed job would.
    interrupted = lambda: run(tmp_path / "resumed", 0, checkpoint_every=3, checkpoints_total_limit=2)  # noqa: E731
    run_interrupted_after(9, monkeypatch, interrupted)
    assert [Path(p).name for p in list_checkpoints(tmp_path / "resumed")] == ["step_6", "step_9"]

    # A different initialisation: everything must come from the checkpoint.
    resumed = run(tmp_path / "resumed", 123, checkpoint_every=3, checkpoints_total_limit=2, resume_from_checkpoint="latest")
    assert [Path(p).name for p in list_checkpoints(tmp_path / "resumed")] == ["step_12", "step_15"]

    expected, got = reference.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys()
    assert {"quantizer.codebook.ema_cluster_size", "quantizer.codebook.ema_embed_sum", "quantizer.codebook.usage"} <= set(got)
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"tensors differ after resume: {different}"


@pytest.fixture
def restored_determinism(monkeypatch):
    """Put torch's process-wide determinism settings back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.set_float32_matmul_precision(saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def test_deterministic_runs_resume_exactly_and_change_nothing_on_a_cpu(tmp_path, monkeypatch, restored_determinism):
    import os

    train_set = pixel_dataset(tiny_images(count=12), 16, 3, augment=True)

    def run(output_dir, init_seed, **overrides):
        set_seed(init_seed)
        model = VQTokenizer.from_config(tiny_config(dead_code_threshold=5.0))
        train_tokenizer(model, train_set, None, tiny_args(output_dir, max_steps=6, **overrides))
        return model

    plain = run(tmp_path / "plain", 0)
    assert not torch.are_deterministic_algorithms_enabled()
    deterministic = run(tmp_path / "deterministic", 0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.get_float32_matmul_precision() == "highest"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    run_interrupted_after(3, monkeypatch, lambda: run(tmp_path / "resumed", 0, deterministic=True, checkpoint_every=3))
    resumed = run(tmp_path / "resumed", 7, deterministic=True, checkpoint_every=3, resume_from_checkpoint="latest")
    for model in (deterministic, resumed):  # a CPU is deterministic already: the switch changes no value
        different = [name for name, tensor in plain.state_dict().items() if not torch.equal(tensor, model.state_dict()[name])]
        assert not different, different


def test_stream_splits_each_global_batch_over_processes_and_is_seeded():
    train_set = pixel_dataset(tiny_images(count=10), 16, 3, augment=True)
    stream = SampleStream(train_set, seed=3)

    def batches(sampler, count):
        iterator = iter(sampler)
        return [next(iterator) for _ in range(count)]

    single = batches(ProcessBatches(start=6, batch_size=4), 3)
    pairs = zip(batches(ProcessBatches(6, 2, num_processes=2, process_index=0), 3),
                batches(ProcessBatches(6, 2, num_processes=2, process_index=1), 3))
    assert single == [first + second for first, second in pairs]
    assert single[0] == [6, 7, 8, 9]
    # Every epoch visits every image once; the draw fixes image and augmentation.
    assert sorted(stream.index(d) for d in range(10, 20)) == list(range(10))
    assert torch.equal(stream[13]["pixel_values"], SampleStream(train_set, seed=3)[13]["pixel_values"])
    same_image = [d for d in range(200) if stream.index(d) == stream.index(0)]
    assert len({stream[d]["pixel_values"].sum().item() for d in same_image}) > 1, "augmentation never varies"


def test_training_arguments_are_checked():
    assert TrainingArguments(report_to="none").trackers == []
    assert TrainingArguments(report_to="tensorboard, wandb").trackers == ["tensorboard", "wandb"]
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainingArguments(checkpoint_every=-1)
    with pytest.raises(ValueError, match="checkpoints_total_limit"):
        TrainingArguments(checkpoints_total_limit=0)
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        resolve_checkpoint(TrainingArguments(resume_from_checkpoint="/no/such/checkpoint"))


def load_script():
    import vqtok.commands.train

    return vqtok.commands.train


def test_command_line_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    script = load_script()
    results = script.main([
        "--config", str(REPO / "training" / "configs" / "vq.yaml"),
        "--resume_from_checkpoint", "latest",  # nothing to resume yet: a fresh start
        f"training.output_dir={out}", "training.max_steps=4", "training.batch_size=8", "training.warmup_steps=1",
        "training.checkpoint_every=2", "training.checkpoints_total_limit=1", "training.eval_every=2",
        "training.log_every=1", "training.eval_batch_size=64",
        "model.image_size=16", "model.backbone_config.base_channels=8", "model.latent_dim=8", "model.codebook_size=16",
    ])
    assert "starting from step 0" in capsys.readouterr().out
    assert [Path(p).name for p in list_checkpoints(out)] == ["step_4"]
    assert glob.glob(str(out / "logs" / "**" / "events.out.tfevents.*"), recursive=True)
    assert (out / "reconstructions_step2.png").exists() and (out / "reconstructions.png").exists()

    config = json.loads((out / "tokenizer" / "config.json").read_text())
    meta = config["training_metadata"]
    assert meta["image_size"] == 16 and meta["in_channels"] == 3 and meta["pixel_range"] == [-1.0, 1.0]
    assert meta["dataset"]["source"] == "sample" and meta["steps"] == 4 and meta["seed"] == 0
    assert set(meta["final_metrics"]) >= {"mse", "psnr", "perplexity", "codes_used"}
    assert meta["final_metrics"]["psnr"] == pytest.approx(results["psnr"])
    tokenizer = VQTokenizer.from_pretrained(out / "tokenizer")
    assert tokenizer.config.training_metadata == meta
    assert json.loads((out / "metrics.json").read_text())["psnr"] == pytest.approx(results["psnr"])
    card = ModelCard.load(out / "tokenizer" / "README.md")
    assert "vqtok" in card.data.tags and f"{results['psnr']:.4g}" in card.text
    assert "- **steps**: 4" in card.text and "  - **source**: sample" in card.text
    psnr = next(r for r in card.data.eval_results if r.metric_name == "psnr")
    assert psnr.metric_value == pytest.approx(results["psnr"]) and psnr.dataset_type == "vqtok-sample"
    assert psnr.dataset_split == "test"
    processor = VQImageProcessor.from_pretrained(out / "tokenizer")
    assert processor.crop_size["height"] == 16 and processor.num_channels == 3
