"""How the tokenizer trains, beyond the loop: a compiled backbone (`training.compile`) trains as the
eager one and is eager again afterwards; activation checkpointing (`backbone_config.gradient_checkpointing`)
gives the same gradients; channels-last training gives the same step for every type; the optimizer
decays weight matrices only and takes the run's betas. (Speed and memory: benchmarks/.)"""

import pytest
import torch
from accelerate.utils import set_seed

import vqtok.training.trainer as trainer
from test_training import tiny_args, tiny_config
from tiny_data import tiny_images
from vqtok import VQConfig, VQTokenizer
from vqtok.auto import TOKENIZER_REGISTRY
from vqtok.backbones.conv import ResidualBlock
from vqtok.data import pixel_dataset
from vqtok.training import train_tokenizer

BACKBONES = {
    "conv": {"backbone_type": "conv", "base_channels": 8},
    "vqgan": {"backbone_type": "vqgan", "base_channels": 8, "channel_multipliers": [1, 2, 2], "num_res_blocks": 1,
              "z_channels": 8, "norm_groups": 4, "attention_levels": [2]},
}


def trained(output_dir, **overrides):
    set_seed(0)
    model = VQTokenizer.from_config(tiny_config())
    train_tokenizer(model, pixel_dataset(tiny_images(count=16), 16, 3, augment=True), None,
                    tiny_args(output_dir, max_steps=4, **overrides))
    return model


def test_a_compiled_backbone_trains_as_the_eager_one_and_is_eager_afterwards(tmp_path, monkeypatch):
    # The tests compile with AOTAutograd's eager backend (seconds, not a minute of code generation); the
    # default backend's equality and speed are measured by benchmarks/training_throughput.py.
    monkeypatch.setattr(trainer, "COMPILE_BACKEND", "aot_eager")
    calls = []
    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, **kwargs: calls.append(kwargs) or original(module, **kwargs))
    eager = trained(tmp_path / "eager")
    compiled = trained(tmp_path / "compiled", compile=True)
    assert calls == [{"backend": "aot_eager"}] * 2  # the encoder and the decoder
    for name, tensor in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert compiled.encoder._compiled_call_impl is None and compiled.decoder._compiled_call_impl is None


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_activation_checkpointing_gives_the_same_gradients(backbone):
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = VQTokenizer.from_config(VQConfig(image_size=16, latent_dim=8, codebook_size=16, kmeans_init=False,
                                                 backbone_config={**BACKBONES[backbone],
                                                                  "gradient_checkpointing": checkpointing}))
        recomputed = []
        for module in model.modules():
            if isinstance(module, ResidualBlock):
                module.register_forward_pre_hook(lambda *args: recomputed.append(None))
        model(torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1).loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}, len(recomputed)

    (plain, plain_forwards), (checkpointed, checkpointed_forwards) = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 20
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    assert plain_forwards > 0 and checkpointed_forwards == 2 * plain_forwards  # every block ran again in the backward


def test_transformers_switches_activation_checkpointing_on_too():
    model = VQTokenizer.from_config(tiny_config())
    assert not model.encoder.gradient_checkpointing
    # transformers' newer 5.x name it activation_checkpointing_enable, the earlier gradient_checkpointing_enable.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert model.encoder.gradient_checkpointing and model.decoder.gradient_checkpointing


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_a_channels_last_backbone_computes_the_same(backbone):
    def run(channels_last: bool):
        torch.manual_seed(0)
        config = VQConfig(image_size=16, latent_dim=8, codebook_size=16, backbone_config=BACKBONES[backbone])
        encoder, decoder = config.backbone_config.build_encoder(3, 8), config.backbone_config.build_decoder(8, 3)
        pixels = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        if channels_last:
            encoder.to(memory_format=torch.channels_last), decoder.to(memory_format=torch.channels_last)
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        latents = encoder(pixels)
        decoder(latents).square().mean().backward()
        grads = {f"{part}.{name}": p.grad for part, module in (("encoder", encoder), ("decoder", decoder))
                 for name, p in module.named_parameters()}
        return latents.detach(), grads

    (latents, grads), (latents_cl, grads_cl) = run(False), run(True)
    torch.testing.assert_close(latents_cl, latents, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_cl[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("model_type", sorted(name for name in TOKENIZER_REGISTRY if name.startswith("vqtok-")))
def test_every_quantizer_reads_channels_last_latents_as_the_usual_ones(model_type):
    """The same latent values in either layout give the same ids and vectors; a channels-last training
    step runs. (Whole training steps are not compared: a latent 1e-6 away can rightly pick another code.)"""
    config_class, model_class = TOKENIZER_REGISTRY[model_type]
    torch.manual_seed(0)
    model = model_class(config_class(image_size=16, backbone_config={"base_channels": 8}))
    pixels = torch.rand(4, model.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    model(pixels)  # the first training batch initialises the codebook
    latents = model.encoder(pixels).detach()
    quantizer = model.quantizer.eval()
    usual, channels_last = quantizer(latents), quantizer(latents.contiguous(memory_format=torch.channels_last))
    assert torch.equal(channels_last.indices, usual.indices)
    torch.testing.assert_close(channels_last.quantized, usual.quantized, rtol=0, atol=1e-6)
    assert torch.equal(quantizer.select(latents.contiguous(memory_format=torch.channels_last)), quantizer.select(latents))

    model.train().to(memory_format=torch.channels_last)
    output = model(pixels.contiguous(memory_format=torch.channels_last))
    output.loss.backward()
    assert torch.isfinite(output.loss) and model.encoder.conv_in.weight.grad.abs().sum() > 0


def test_a_channels_last_run_saves_weights_in_the_usual_layout(tmp_path):
    model = trained(tmp_path / "run", channels_last=True, checkpoint_every=2)
    assert all(tensor.is_contiguous() for tensor in model.state_dict().values())
    model.save_pretrained(tmp_path / "saved")


def test_the_optimizer_decays_weight_matrices_only_and_takes_the_runs_betas():
    model = VQTokenizer.from_config(VQConfig(image_size=16, latent_dim=8, codebook_size=16, use_ema=False,
                                             backbone_config={"base_channels": 8}))
    names = {id(p): name for name, p in model.named_parameters()}
    optimizer = model.build_optimizer(1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    decayed = {names[id(p)] for group in optimizer.param_groups if group["weight_decay"] for p in group["params"]}
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert "encoder.conv_in.weight" in decayed and "decoder.conv_out.weight" in decayed
    assert not any(name.endswith(".bias") or ".norm" in name or name.startswith("quantizer.") for name in decayed)
    assert "quantizer.codebook.weight" in {names[id(p)] for group in optimizer.param_groups for p in group["params"]}
    all_params = sum(len(group["params"]) for group in optimizer.param_groups)
    assert all_params == sum(1 for p in model.parameters() if p.requires_grad)
    # Without decay, one group (as before decay had groups of its own): earlier runs' checkpoints resume.
    assert len(model.build_optimizer(1e-3).param_groups) == 1
