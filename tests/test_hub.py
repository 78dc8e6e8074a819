"""Hub round trip of vqtok tokenizers (push_to_hub / from_pretrained against `LocalHub`), the model
card, and the errors of loading a bad checkpoint (pickle-only, missing files, mismatched config)."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import transformers
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from safetensors.torch import load_file, save_file

from vqtok import VQConfig, VQModel, VQTokenizer
from vqtok.hub import render_model_card, save_model_card
from vqtok.hub.model_card import card_reference
from vqtok.auto import TOKENIZER_REGISTRY

from test_contract import SHIPPED_TYPES, tiny_values

try:
    from hub_server import FAKE_TOKEN, USER, set_hf_offline
except ImportError:  # if tests/ ever becomes a package
    from tests.hub_server import FAKE_TOKEN, USER, set_hf_offline

REPO = f"{USER}/tiny-vq"
TINY = dict(backbone_config=dict(base_channels=8), image_size=8, codebook_size=16, latent_dim=4)
METRICS = {"PSNR (dB)": 27.5, "codebook usage": 0.9375, "rFID": 12}


def tiny_model(seed: int = 0) -> VQModel:
    """A tiny VQModel whose codebook and EMA buffers differ from a fresh model's (as after training)."""
    torch.manual_seed(seed)
    model = VQModel(VQConfig(**TINY))
    quantizer = model.quantizer
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.randn_like(quantizer.codebook.weight))
        quantizer.codebook.initialized.fill_(True)
        quantizer.codebook.ema_cluster_size.copy_(torch.arange(1.0, 17.0))
        quantizer.codebook.ema_embed_sum.copy_(torch.randn_like(quantizer.codebook.ema_embed_sum))
        quantizer.codebook.usage.copy_(torch.rand_like(quantizer.codebook.usage))
    return model.eval()


def pixels() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def assert_same_model(expected, actual) -> None:
    assert type(actual) is type(expected)
    want, got = expected.state_dict(), actual.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert want[name].dtype == got[name].dtype, name
        assert torch.equal(want[name], got[name]), name
    assert bool(actual.quantizer.codebook.initialized)
    assert torch.equal(expected.encode(pixels()), actual.encode(pixels()))


def files_under(folder: Path, name: str) -> list[Path]:
    return list(Path(folder).rglob(name)) if Path(folder).exists() else []


# --- push and load ----------------------------------------------------------------------------
def test_push_to_hub_then_vqtokenizer_and_automodel_load_the_same_model(local_hub):
    model = tiny_model()
    commit = model.push_to_hub(REPO, metrics=METRICS, training_data="The bundled sample set.")

    assert set(HfApi().list_repo_files(REPO)) == {".gitattributes", "config.json", "model.safetensors", "README.md", "vqtok_loader.py"}
    assert HfApi().model_info(REPO).sha == commit.oid
    loaded = VQTokenizer.from_pretrained(REPO)
    assert_same_model(model, loaded)
    assert_same_model(model, transformers.AutoModel.from_pretrained(REPO))
    assert_same_model(model, VQModel.from_pretrained(REPO))
    assert local_hub.unknown_requests == []


def test_revision_loads_an_earlier_push(local_hub):
    first_model = tiny_model(seed=0)
    first = first_model.push_to_hub(REPO).oid
    second_model = tiny_model(seed=1)
    second = second_model.push_to_hub(REPO, commit_message="retrained").oid
    assert first != second

    assert_same_model(first_model, VQTokenizer.from_pretrained(REPO, revision=first))
    assert_same_model(second_model, VQTokenizer.from_pretrained(REPO))
    assert_same_model(first_model, transformers.AutoModel.from_pretrained(REPO, revision=first))


def test_cache_dir_is_honoured(local_hub, tmp_path):
    model = tiny_model()
    model.push_to_hub(REPO)
    cache = tmp_path / "my-cache"

    assert_same_model(model, VQTokenizer.from_pretrained(REPO, cache_dir=cache))
    assert files_under(cache, "model.safetensors") and files_under(cache, "config.json")
    default_cache = tmp_path / "hf_home" / "hub"  # where the fixture points HF_HUB_CACHE
    assert files_under(default_cache, "model.safetensors") == []
    assert files_under(default_cache, "config.json") == []


def test_token_passes_through_for_a_private_repo(local_hub, monkeypatch):
    model = tiny_model()
    model.push_to_hub(REPO, private=True)
    monkeypatch.delenv("HF_TOKEN")  # from now on only an explicit token authenticates

    with pytest.raises(OSError):
        VQTokenizer.from_pretrained(REPO)
    assert_same_model(model, VQTokenizer.from_pretrained(REPO, token=FAKE_TOKEN))


def test_offline_mode_loads_from_the_cache_and_fails_clearly_for_an_unseen_repo(local_hub, monkeypatch):
    model = tiny_model()
    model.push_to_hub(REPO)
    tiny_model(seed=1).push_to_hub(f"{USER}/never-downloaded")
    tiny_model(seed=1).push_to_hub(f"{USER}/config-only")
    hf_hub_download(f"{USER}/config-only", "config.json")
    VQTokenizer.from_pretrained(REPO)  # fills the cache

    local_hub.stop()
    set_hf_offline(monkeypatch)
    assert_same_model(model, VQTokenizer.from_pretrained(REPO))
    assert_same_model(model, transformers.AutoModel.from_pretrained(REPO))
    with pytest.raises(OSError, match="never-downloaded is not in the local Hub cache.*offline mode"):
        VQTokenizer.from_pretrained(f"{USER}/never-downloaded")
    with pytest.raises(OSError, match="model.safetensors of local-user/config-only is not in the local Hub cache"):
        VQTokenizer.from_pretrained(f"{USER}/config-only")


def test_save_pretrained_with_push_to_hub_pushes_the_vqtok_card(local_hub, tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "out", push_to_hub=True, repo_id=REPO, metrics={"PSNR (dB)": 30.0})

    assert {"config.json", "model.safetensors"} <= set(os.listdir(tmp_path / "out"))
    card = ModelCard.load(REPO)
    assert card.data.library_name == "vqtok"
    assert "| PSNR (dB) | 30 |" in card.text
    assert_same_model(model, VQTokenizer.from_pretrained(REPO))


# --- model card -------------------------------------------------------------------------------
def test_model_card_on_the_hub(local_hub):
    tiny_model().push_to_hub(
        REPO, metrics=METRICS, training_data="The bundled sample set.", datasets=["cifar10"], tags=["demo"]
    )

    card = ModelCard.load(REPO)  # parses the YAML header back
    assert card.data.library_name == "vqtok"
    assert card.data.license == "apache-2.0"
    assert card.data.tags[:3] == ["image-tokenization", "vqtok", "vq-vae"] and "demo" in card.data.tags
    assert card.data.datasets == ["cifar10"]
    assert card.data.pipeline_tag is None
    text = card.text
    assert "Neural Discrete Representation Learning" in text and "arXiv:1711.00937" in text
    assert "@inproceedings{vandenoord2017neural" in text
    assert "| Metric | Value |" in text
    for row in ("| PSNR (dB) | 27.5 |", "| codebook usage | 0.9375 |", "| rFID | 12 |"):
        assert row in text
    assert "The bundled sample set." in text
    assert "| `codebook_size` | 16 |" in text and "| `use_ema` | true |" in text
    assert f'VQTokenizer.from_pretrained("{REPO}")' in text
    # The metrics also go into model-index, which the Hub shows as evaluation results.
    results = {result.metric_name: result for result in card.data.eval_results}
    assert list(results) == list(METRICS)
    assert [results[name].metric_value for name in METRICS] == list(METRICS.values())
    assert results["PSNR (dB)"].metric_type == "psnr_db" and results["rFID"].metric_type == "rfid"
    where = {(r.task_type, r.dataset_type, r.dataset_split) for r in results.values()}
    assert where == {("image-to-image", "cifar10", None)}
    assert card.data.model_name == REPO.split("/")[-1]


def test_model_index_names_the_evaluation_data_and_training_metadata_is_a_list():
    model = tiny_model()
    model.config.training_metadata = {"steps": 300, "dataset": {"source": "sample", "num_train_images": 2484},
                                      "final_metrics": {"psnr": 26.2272}}
    card = render_model_card(model, metrics={"mse": 0.0055}, eval_dataset="vqtok-sample", eval_split="test")
    (result,) = card.data.eval_results
    assert (result.dataset_type, result.dataset_split, result.metric_type) == ("vqtok-sample", "test", "mse")
    text = card.text
    assert "- **steps**: 300\n- **dataset**:\n  - **source**: sample\n  - **num_train_images**: 2484" in text
    assert "  - **psnr**: 26.23" in text
    assert "`training_metadata` |" not in text  # a list of its own, not one JSON cell of the config table
    assert "eval_results" not in str(render_model_card(model).data.to_dict())  # no metrics: no model-index


def test_bad_card_arguments_fail_before_anything_is_uploaded(local_hub):
    with pytest.raises(TypeError, match="metrics\\['psnr'\\]"):
        tiny_model().push_to_hub(REPO, metrics={"psnr": [27.5]})
    with pytest.raises(ValueError, match="license"):
        tiny_model().push_to_hub(REPO, license="")
    assert local_hub.repos == {}


def test_save_model_card_writes_readme(tmp_path):
    path = save_model_card(tiny_model(), tmp_path, repo_id="someone/tok", metrics={"MSE": 0.001234})
    card = ModelCard.load(path)
    assert path == tmp_path / "README.md"
    assert card.data.tags == ["image-tokenization", "vqtok", "vq-vae"]
    assert "| MSE | 0.001234 |" in card.text
    assert "No evaluation results" in render_model_card(tiny_model()).text


PAPERS = {
    "vqtok-vq": ["Neural Discrete Representation Learning"],
    "vqtok-nsvq": ["NSVQ: Noise Substitution in Vector Quantization for Machine Learning"],
    "vqtok-softvq": ["Theory and Experiments on Vector Quantized Autoencoders"],
    "vqtok-gumbel": ["vq-wav2vec: Self-Supervised Learning of Discrete Speech Representations",
                     "Categorical Reparameterization with Gumbel-Softmax"],
    "vqtok-sqvae": ["SQ-VAE: Variational Bayes on Discrete Representation with Self-annealed Stochastic Quantization"],
    "vqtok-vmf-sqvae": ["SQ-VAE: Variational Bayes on Discrete Representation with Self-annealed Stochastic Quantization"],
    "vqtok-hypervq": ["HyperVQ: MLR-based Vector Quantization in Hyperbolic Space", "Hyperbolic Neural Networks++"],
    "vqtok-fsq": ["Finite Scalar Quantization: VQ-VAE Made Simple"],
    "vqtok-lfq": ["Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation"],
    "vqtok-bsq": ["Image and Video Tokenization with Binary Spherical Quantization"],
    "vqtok-rvq": ["SoundStream: An End-to-End Neural Audio Codec", "Autoregressive Image Generation using Residual Quantization"],
    "vqtok-msrvq": ["Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale Prediction"],
    "vqtok-simvq": ["Addressing Representation Collapse in Vector Quantized Models with One Linear Layer"],
    "vqtok-ibq": ["Taming Scalable Visual Tokenizer for Autoregressive Image Generation"],
}


def test_every_type_module_declares_its_papers_and_a_bibtex_entry():
    assert set(SHIPPED_TYPES) == set(PAPERS)
    for model_type, titles in PAPERS.items():
        reference = TOKENIZER_REGISTRY[model_type][0].reference
        assert [paper.title for paper in reference.papers] == titles
        assert reference.bibtex.count("@") == len(titles)
        assert all(paper.url for paper in reference.papers)


def test_the_rotation_trick_is_cited_where_it_is_switched_on():
    rotation = "Restructuring Vector Quantization with the Rotation Trick"
    for model_type in ("vqtok-vq", "vqtok-simvq", "vqtok-rvq"):
        config_class = TOKENIZER_REGISTRY[model_type][0]
        assert rotation not in [paper.title for paper in card_reference(config_class(**TINY)).papers]
        with_trick = card_reference(config_class(**TINY, rotation_trick=True))
        assert [paper.title for paper in with_trick.papers] == PAPERS[model_type] + [rotation]
    card = render_model_card(VQConfig(**TINY, rotation_trick=True)).content
    assert "arXiv:2410.06424" in card and "@inproceedings{fifty2025restructuring" in card


def test_card_keywords_are_checked_once_for_every_card_function():
    model = tiny_model()
    for render in (render_model_card, model.render_card):
        with pytest.raises(TypeError, match=r"unknown model card keyword\(s\) \['licence'\]; the card takes \['repo_id', "):
            render(model, licence="mit") if render is render_model_card else render(licence="mit")
    with pytest.raises(TypeError, match=r"unknown model card keyword\(s\) \['metric'\]"):
        model.push_to_hub("someone/tiny", metric={"psnr": 1.0})  # refused before any network call
    with pytest.raises(TypeError, match="datasets must be a list of non-empty strings"):
        render_model_card(model, datasets="cifar10")


def test_a_config_without_a_reference_gets_a_generic_card():
    class UndocumentedConfig(VQConfig):
        model_type = "vqtok-new"
        reference = None

    reference = card_reference(UndocumentedConfig(**TINY))
    assert reference.papers == () and reference.tag == "new"
    card = render_model_card(UndocumentedConfig(**TINY))
    assert "No reference paper is recorded for the model type `vqtok-new`" in card.text


@pytest.mark.parametrize("model_type", sorted(TOKENIZER_REGISTRY))
def test_card_of_every_registered_tokenizer_names_its_quantizer(model_type):
    config = TOKENIZER_REGISTRY[model_type][0](**tiny_values(model_type, **TINY))
    card = render_model_card(config)
    assert card_reference(config).tag in card.data.tags
    for title in PAPERS.get(model_type, ()):
        assert title in card.text


# --- loading errors ---------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path) -> Path:
    folder = tmp_path / "saved"
    tiny_model().save_pretrained(folder)
    return folder


class _Trap:
    """Unpickling this creates the directory `path`: evidence that a file was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def write_pickle_only_checkpoint(folder: Path, marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(VQConfig(**TINY).to_dict()))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))


def assert_trap_armed(folder: Path, marker: Path) -> None:
    """The trap works: unpickling the file does create the marker (so its absence meant something)."""
    assert not marker.exists()
    pickle.loads((folder / "pytorch_model.bin").read_bytes())
    assert marker.is_dir()


def test_pickle_only_directory_is_refused_without_unpickling(tmp_path):
    folder, marker = tmp_path / "pickled", tmp_path / "UNPICKLED"
    write_pickle_only_checkpoint(folder, marker)

    for load in (VQTokenizer.from_pretrained, VQModel.from_pretrained, transformers.AutoModel.from_pretrained):
        with pytest.raises(OSError, match="only a pickle checkpoint \\(pytorch_model.bin\\).*never unpickles"):
            load(folder)
    assert_trap_armed(folder, marker)


def test_pickle_only_hub_repo_is_refused_without_unpickling(local_hub, tmp_path):
    folder, marker = tmp_path / "pickled", tmp_path / "UNPICKLED"
    write_pickle_only_checkpoint(folder, marker)
    HfApi().create_repo(REPO)
    HfApi().upload_folder(repo_id=REPO, folder_path=folder)

    with pytest.raises(OSError, match="only a pickle checkpoint \\(pytorch_model.bin\\).*never unpickles"):
        VQTokenizer.from_pretrained(REPO)
    with pytest.raises(OSError, match="never unpickles"):
        transformers.AutoModel.from_pretrained(REPO)
    assert files_under(tmp_path / "hf_home", "pytorch_model.bin") == []  # not even downloaded
    assert local_hub.unknown_requests == []  # no safetensors auto-conversion attempt either
    assert_trap_armed(folder, marker)


def test_missing_files_hub_repo(local_hub, saved):
    (saved / "model.safetensors").unlink()
    HfApi().create_repo(REPO)
    HfApi().upload_folder(repo_id=REPO, folder_path=saved)
    with pytest.raises(OSError, match="has no model.safetensors"):
        VQTokenizer.from_pretrained(REPO)


def _set_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _drop_and_add_tensor(folder: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    del tensors["quantizer.codebook.weight"]
    tensors["quantizer.extra"] = torch.zeros(3)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)


BAD_CHECKPOINTS = {
    "missing config": (lambda f: (f / "config.json").unlink(), OSError, "has no config.json"),
    "missing weights": (lambda f: (f / "model.safetensors").unlink(), OSError, "has no model.safetensors"),
    "codebook_size changed": (
        lambda f: _set_config(f, codebook_size=32),
        ValueError,
        r"tensor shapes differ: .*quantizer\.codebook\.weight \(checkpoint \[16, 4\], config \[32, 4\]\)",
    ),
    "latent_dim changed": (lambda f: _set_config(f, latent_dim=8), ValueError, r"quantizer\.codebook\.ema_embed_sum"),
    "tensors missing and unexpected": (
        _drop_and_add_tensor,
        ValueError,
        r"missing from the checkpoint: quantizer\.codebook\.weight; not part of the model: quantizer\.extra",
    ),
    "unknown key": (lambda f: _set_config(f, bogus=1), ValueError, r"unknown config key\(s\) \['bogus'\]"),
    "truncated safetensors": (_truncate, OSError, "corrupt or truncated"),
    "garbage safetensors": (_garbage, OSError, "corrupt or truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_local_checkpoint_fails_clearly(saved, case):
    mutate, error, message = BAD_CHECKPOINTS[case]
    mutate(saved)
    with pytest.raises(error, match=message):
        VQTokenizer.from_pretrained(saved)
    with pytest.raises(error, match=message):
        VQModel.from_pretrained(saved)


def test_unknown_model_type_lists_the_registered_types(saved):
    _set_config(saved, model_type="vqtok-nope")
    with pytest.raises(ValueError, match="unknown vqtok model_type 'vqtok-nope'") as info:
        VQTokenizer.from_pretrained(saved)
    for model_type in TOKENIZER_REGISTRY:
        assert repr(model_type) in str(info.value)


def test_model_class_of_another_type_points_to_vqtokenizer(saved):
    _set_config(saved, model_type="vqtok-nsvq")
    with pytest.raises(ValueError, match="VQModel loads 'vqtok-vq'.*VQTokenizer.from_pretrained"):
        VQModel.from_pretrained(saved)


def test_mismatch_can_be_accepted_on_purpose(saved):
    _set_config(saved, codebook_size=32)
    model, info = VQModel.from_pretrained(saved, ignore_mismatched_sizes=True, output_loading_info=True)
    assert model.quantizer.codebook.weight.shape == (32, 4)
    assert {key for key, *_ in info["mismatched_keys"]} >= {"quantizer.codebook.weight"}
    # The re-created tensors start as a freshly built model's, not as uninitialised memory.
    fresh = VQModel(model.config)
    assert all(torch.isfinite(tensor).all() for tensor in model.state_dict().values())
    torch.testing.assert_close(model.quantizer.codebook.usage, fresh.quantizer.codebook.usage, rtol=0, atol=0)
    torch.testing.assert_close(model.quantizer.codebook.ema_cluster_size, fresh.quantizer.codebook.ema_cluster_size, rtol=0, atol=0)


def test_other_refusals_and_a_clean_load(saved):
    with pytest.raises(ValueError, match="safetensors weights only"):
        VQModel.from_pretrained(saved, use_safetensors=False)
    with pytest.raises(OSError, match="is a file"):
        VQModel.from_pretrained(saved / "model.safetensors")
    model, info = VQModel.from_pretrained(saved, output_loading_info=True)
    assert info["missing_keys"] == set() and info["mismatched_keys"] == set()
    assert_same_model(tiny_model(), model)


def test_variant_checkpoint(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path, variant="ema")
    assert (tmp_path / "model.ema.safetensors").is_file()
    assert_same_model(model, VQTokenizer.from_pretrained(tmp_path, variant="ema"))
    with pytest.raises(OSError, match="has no model.safetensors"):
        VQTokenizer.from_pretrained(tmp_path)
