"""Two CPU processes (gloo on 127.0.0.1): the VQ and SQ-VAE codebooks and every quantizer buffer stay
identical on both ranks through k-means initialisation, EMA updates and dead-code restarts; one EMA step on
two half-batches equals one step on the whole batch in one process; the Accelerate training
loop (DDP, main-process evaluation, checkpoints) ends with the same model on both ranks, with a weight
EMA too, stopped and resumed or not; and so does
training with the HC-VQ topology term, whose eta, entropy buffers, targets and signature agree too; a
batch that is not finite on one rank only is skipped by both, in the quantizer and in the loop; and a
training objective's own network (the test-only critic) ends identical on both ranks too."""

import os
import traceback
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from processes import run_processes
from safetensors.torch import load_file, save_file

from vqtok.quantizers import SQVAEQuantizer, VectorQuantizer

WORLD_SIZE = 2


def shifting_latents(step: int, generator: torch.Generator, batch: int = 8) -> torch.Tensor:
    """A global batch `[batch, 4, 4, 4]` whose distribution drifts with `step`, so codes die and restart."""
    return torch.randn(batch, 4, 4, 4, generator=generator) + 0.5 * step


def ema_quantizer() -> VectorQuantizer:
    torch.manual_seed(1)
    return VectorQuantizer(16, 4, kmeans_init=False, dead_code_threshold=0.0, ema_decay=0.9)


def ema_batch() -> torch.Tensor:
    return torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(7))


def _half(batch: torch.Tensor, rank: int) -> torch.Tensor:
    size = batch.shape[0] // WORLD_SIZE
    return batch[rank * size : (rank + 1) * size]


def _worker(rank: int, port: int, out_dir: str) -> None:
    try:
        _run_rank(rank, port, Path(out_dir))
    except BaseException:
        (Path(out_dir) / f"error_rank{rank}.txt").write_text(traceback.format_exc())
        raise


def _run_rank(rank: int, port: int, out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE), LOCAL_WORLD_SIZE=str(WORLD_SIZE), ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
    )
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60)
    )

    # 1. Codebook maintenance: every rank quantizes its own half of a drifting global batch.
    torch.manual_seed(100 + rank)  # different RNG streams per rank: agreement must come from the collectives
    vq = VectorQuantizer(16, 4, kmeans_init=True, dead_code_threshold=6.0, ema_decay=0.9)
    data = torch.Generator().manual_seed(0)
    restarted = 0.0
    for step in range(6):
        restarted += float(vq(_half(shifting_latents(step, data), rank)).stats["restarted_codes"])
    save_file({**vq.state_dict(), "restarted": torch.tensor(restarted)}, out / f"maintenance_rank{rank}.safetensors")

    # 1b. The same for SQ-VAE's gradient-learnt codebook (k-means init and restarts, no optimizer step).
    sq = SQVAEQuantizer(16, 4, latent_scale=1.0, kmeans_init=True, dead_code_threshold=6.0).train()
    data = torch.Generator().manual_seed(0)
    restarted = 0.0
    for step in range(6):
        restarted += float(sq(_half(shifting_latents(step, data), rank)).stats["restarted_codes"])
    state = {name: tensor.detach() for name, tensor in sq.state_dict().items()}
    save_file({**state, "restarted": torch.tensor(restarted)}, out / f"sq_maintenance_rank{rank}.safetensors")

    # 2. One EMA step on half of a batch per rank.
    ema = ema_quantizer()
    ema(_half(ema_batch(), rank))
    save_file(ema.state_dict(), out / f"ema_rank{rank}.safetensors")

    # 3. The training loop under DDP, with a periodic main-process evaluation and checkpoints.
    from accelerate.utils import set_seed
    from test_training import tiny_args, tiny_config, tiny_images

    from vqtok import VQTokenizer
    from vqtok.data import pixel_dataset
    from vqtok.training.trainer import make_accelerator, train_tokenizer

    args = tiny_args(
        out / "run", max_steps=4, batch_size=4, gradient_accumulation_steps=1, eval_every=2, eval_batch_size=16,
        checkpoint_every=2, checkpoints_total_limit=1, log_every=1,
    )
    set_seed(rank)  # different initialisations: DDP must start both ranks from rank 0's weights
    model = VQTokenizer.from_config(tiny_config(dead_code_threshold=5.0))
    accelerator = make_accelerator(args)
    assert accelerator.num_processes == WORLD_SIZE
    images = tiny_images(count=24)
    results = train_tokenizer(
        model, pixel_dataset(images, 16, 3, augment=True), pixel_dataset(images.select(range(8)), 16, 3), args, accelerator
    )
    assert ("psnr" in results) == (rank == 0), results
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, out / f"trained_rank{rank}.safetensors")

    # 4. The HC-VQ topology term under DDP, on each of its point clouds (the quantized vectors differ per rank).
    for cloud in ("codebook", "quantized"):
        topology = {"point_cloud": cloud, "warmup_steps": 1, "compute_every": 1, "entropy_period": 2}
        set_seed(rank)
        model = VQTokenizer.from_config(tiny_config(use_ema=False, regularizers={"topology": topology}))
        args = tiny_args(out / f"topology_{cloud}", max_steps=4, batch_size=4, gradient_accumulation_steps=1, log_every=1)
        train_tokenizer(model, pixel_dataset(images, 16, 3, augment=True), None, args, make_accelerator(args))
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, out / f"topology_{cloud}_rank{rank}.safetensors")

    # 5. A batch that is not finite on rank 1 only: both ranks leave the quantizer state alone and
    #    skip the optimizer step.
    vq = ema_quantizer()
    vq(_half(ema_batch(), rank))
    before = {name: tensor.clone() for name, tensor in vq.state_dict().items()}
    batch = _half(ema_batch(), rank).clone()
    if rank == 1:
        batch[0, 0, 0, 0] = float("nan")
    skipped = vq(batch).skipped_update
    save_file({**before, **{f"after.{k}": v for k, v in vq.state_dict().items()}, "skipped": torch.tensor(skipped)},
              out / f"nonfinite_quantizer_rank{rank}.safetensors")

    set_seed(rank)
    model = VQTokenizer.from_config(tiny_config())
    forwards = []

    def poison_second_forward_on_rank_1(module, inputs, output):
        forwards.append(None)
        return output * float("inf") if rank == 1 and len(forwards) == 2 else output

    model.encoder.register_forward_hook(poison_second_forward_on_rank_1)
    args = tiny_args(out / "nonfinite", max_steps=3, batch_size=4, gradient_accumulation_steps=1, log_every=1)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        results = train_tokenizer(model, pixel_dataset(images, 16, 3, augment=True), None, args, make_accelerator(args))
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file({**state, "skipped_steps": torch.tensor(results["skipped_steps"])}, out / f"nonfinite_rank{rank}.safetensors")

    # 6. A training objective with a network and an optimizer of its own (the test-only critic), with
    #    gradient accumulation: tokenizer and critic end identical on both ranks.
    from example_extensions import CriticObjective

    set_seed(rank)
    model = VQTokenizer.from_config(tiny_config())
    critic = CriticObjective(weight=0.5, learning_rate=0.05)
    args = tiny_args(out / "critic", max_steps=3, batch_size=2, gradient_accumulation_steps=2, log_every=1)
    train_tokenizer(model, pixel_dataset(images, 16, 3, augment=True), None, args, make_accelerator(args),
                    objectives={"test-critic": critic})
    state = {f"tokenizer.{name}": tensor.contiguous() for name, tensor in model.state_dict().items()}
    state.update({f"critic.{name}": tensor.contiguous() for name, tensor in critic.state_dict().items()})
    save_file(state, out / f"critic_rank{rank}.safetensors")

    # 7. The shipped objectives: LPIPS (random VGG16) and the PatchGAN with LeCam, from the first step,
    #    with gradient accumulation: tokenizer, discriminator and LeCam's averages end identical.
    from vqtok.losses import build_objectives

    set_seed(rank)
    model = VQTokenizer.from_config(tiny_config())
    objectives = build_objectives({
        "perceptual": {"weight": 0.5, "vgg_weights": "random"},
        "adversarial": {"num_layers": 2, "base_channels": 8, "learning_rate": 1e-3, "lecam_weight": 0.01, "lecam_decay": 0.9},
    })
    args = tiny_args(out / "sharp", max_steps=3, batch_size=2, gradient_accumulation_steps=2, log_every=1)
    train_tokenizer(model, pixel_dataset(images, 16, 3, augment=True), None, args, make_accelerator(args), objectives=objectives)
    state = {f"tokenizer.{name}": tensor.contiguous() for name, tensor in model.state_dict().items()}
    state.update({f"adversarial.{name}": tensor.contiguous() for name, tensor in objectives["adversarial"].state_dict().items()})
    save_file(state, out / f"sharp_rank{rank}.safetensors")

    # 8. Weight EMA, straight and stopped after the step-2 checkpoint then resumed: the averages (and
    #    so the model, which ends holding them) are identical on both ranks and across the resume.
    import vqtok.training.trainer as trainer
    from tiny_data import Interrupted

    def ema_run(name, **overrides):
        set_seed(rank)
        model = VQTokenizer.from_config(tiny_config())
        args = tiny_args(out / name, max_steps=4, batch_size=4, gradient_accumulation_steps=1, ema_decay=0.5,
                         checkpoint_every=2, **overrides)
        train_tokenizer(model, pixel_dataset(images, 16, 3, augment=True), None, args, make_accelerator(args))
        return model

    straight = ema_run("ema_straight")
    save = trainer.save_run_checkpoint

    def save_then_stop(accelerator, updates, args, at_step):
        save(accelerator, updates, args, at_step)
        raise Interrupted

    trainer.save_run_checkpoint = save_then_stop
    try:
        ema_run("ema_resumed")
    except Interrupted:
        pass
    finally:
        trainer.save_run_checkpoint = save
    resumed = ema_run("ema_resumed", resume_from_checkpoint="latest")
    for name, model in (("ema_straight", straight), ("ema_resumed", resumed)):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"{name}_rank{rank}.safetensors")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run `_run_rank` on 2 processes once; the per-rank results, read back."""
    out = tmp_path_factory.mktemp("distributed")
    run_processes(_worker, (str(out),), out, ["test_distributed", "test_training", "vqtok.training.trainer"], WORLD_SIZE)
    return out


def _both(out: Path, name: str) -> tuple[dict, dict]:
    return tuple(load_file(out / f"{name}_rank{rank}.safetensors") for rank in range(WORLD_SIZE))


def _assert_identical(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"differs between ranks: {different}"


@pytest.mark.parametrize("quantizer", ["maintenance", "sq_maintenance"])
def test_codebook_and_buffers_identical_on_both_ranks(two_ranks, quantizer):
    rank0, rank1 = _both(two_ranks, quantizer)
    assert float(rank0["restarted"]) > 0, "no dead-code restart happened: the test would not cover them"
    assert bool(rank0["codebook.initialized"])
    _assert_identical(rank0, rank1)


def test_two_half_batch_ema_step_equals_one_process_on_the_global_batch(two_ranks):
    rank0, rank1 = _both(two_ranks, "ema")
    _assert_identical(rank0, rank1)
    single = ema_quantizer()
    single(ema_batch())
    expected = single.state_dict()
    assert torch.equal(rank0["codebook.ema_cluster_size"], expected["codebook.ema_cluster_size"])  # integer counts: exact
    for name in ("codebook.ema_embed_sum", "codebook.weight", "codebook.usage"):
        torch.testing.assert_close(rank0[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_ddp_training_ends_with_the_same_model_on_both_ranks(two_ranks):
    rank0, rank1 = _both(two_ranks, "trained")
    _assert_identical(rank0, rank1)
    checkpoints = sorted(p.name for p in (two_ranks / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step_4"]
    assert (two_ranks / "run" / "reconstructions_step2.png").exists()


@pytest.mark.parametrize("cloud", ["codebook", "quantized"])
def test_topology_state_is_identical_on_both_ranks(two_ranks, cloud):
    rank0, rank1 = _both(two_ranks, f"topology_{cloud}")
    assert int(rank0["regularizers.topology.step"]) == 4
    assert float(rank0["regularizers.topology.eta"]) > 0 and bool(rank0["regularizers.topology.targets_set"])
    _assert_identical(rank0, rank1)


def test_a_batch_not_finite_on_one_rank_is_skipped_on_every_rank(two_ranks):
    rank0, rank1 = _both(two_ranks, "nonfinite_quantizer")
    _assert_identical(rank0, rank1)
    for saved in (rank0, rank1):
        assert bool(saved["skipped"])
        for name in [key for key in saved if key.startswith("after.")]:
            assert torch.equal(saved[name], saved[name.removeprefix("after.")]), name


def test_the_loop_skips_a_step_not_finite_on_one_rank_on_both(two_ranks):
    rank0, rank1 = _both(two_ranks, "nonfinite")
    _assert_identical(rank0, rank1)
    assert int(rank0["skipped_steps"]) == 1
    assert all(torch.isfinite(tensor).all() for tensor in rank0.values() if tensor.is_floating_point())


def test_an_objective_network_trains_identically_on_both_ranks(two_ranks):
    rank0, rank1 = _both(two_ranks, "critic")
    _assert_identical(rank0, rank1)
    assert any(name.startswith("critic.") for name in rank0)


def test_the_adversarial_objective_trains_identically_on_both_ranks(two_ranks):
    """Batch-norm running statistics are left out: the discriminator always normalises with the
    batch's own statistics in training, and each rank's last forward updates its running ones."""
    rank0, rank1 = _both(two_ranks, "sharp")
    compared = [{name: tensor for name, tensor in rank.items() if "running_" not in name and "num_batches" not in name}
                for rank in (rank0, rank1)]
    _assert_identical(*compared)
    assert any(name.startswith("adversarial.discriminator.") for name in compared[0])
    assert rank0["adversarial.ema_real_logit"].item() != 0.0


def test_weight_ema_is_identical_on_both_ranks_and_resumes_exactly(two_ranks):
    straight, resumed = _both(two_ranks, "ema_straight"), _both(two_ranks, "ema_resumed")
    _assert_identical(*straight)
    _assert_identical(*resumed)
    _assert_identical(straight[0], resumed[0])
    raw = [load_file(two_ranks / name / "tokenizer_raw" / "model.safetensors") for name in ("ema_straight", "ema_resumed")]
    _assert_identical(*raw)
    assert not torch.equal(raw[0]["decoder.conv_out.weight"], straight[0]["decoder.conv_out.weight"])
