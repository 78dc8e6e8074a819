"""Every example of the README and of the documentation site runs, so that a page cannot drift from
the code, and the site builds with `mkdocs build --strict`.

Each page's fenced blocks run in order, in a fresh folder where the names the pages use exist: the
`training/` folder, `path/to/images` (a folder of 40 images), the tokenizer the quickstart writes
(`outputs/quickstart/tokenizer`), Hub repos on the local test server (`your-name/pictures`, the
pretrained tokenizers of `vqtok convert`'s examples, small models under the real names) and the
local checkpoint files those examples convert.

- ```bash: each command, `&&`-chained ones too. `vqtok <command>` (and `python training/<script>.py`)
  runs in this process the way the console script runs it (`vqtok.commands.run`), `torchrun` and
  `mkdocs` in a child process. `pip install ...` is skipped (this is the installed environment), and
  so is `python -m pytest` (this is that suite). Long trainings and evaluations get the small
  overrides of `SMALL_RUNS` appended: they are marked here, not on the pages.
- ```python: a page's blocks run one after the other in one namespace, as a reader pastes them. A block
  that does not import vqtok runs in a fresh interpreter: it says it works without vqtok imported.
- ```yaml: a fragment of a run config, read into the quickstart's run config and checked as
  `vqtok train` checks it.
- ```text: what the page's commands print: every line of it must be among the lines they printed,
  numbers aside (they depend on the machine and on `SMALL_RUNS`).
- A block without a language (a tree, a formula) is not run.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi
from safetensors.torch import save_file
from test_journeys import image_folder

from vqtok.commands import run

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGUAGES = ("bash", "python", "yaml", "text")
TIMEOUT_S = 600

# The small overrides appended to the pages' long runs (300 to 1000 training steps, 256-pixel images, LPIPS
# and rFID on networks whose weights cannot be downloaded here, 16 sampled images), keyed by command. Four steps: the
# first three are not timed, and the fourth gives the throughput the quickstart prints.
SMALL_TRAINING = ["training.max_steps=4", "training.warmup_steps=1", "training.batch_size=16",
                  "training.report_to=none"]
SMALL_RUNS = {
    "train": [*SMALL_TRAINING, "model.image_size=32"],
    "prior": [*SMALL_TRAINING, "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2"],
    "evaluate": ["--vgg_weights", "random", "--inception_weights", "random", "--max_images", "8"],
    "sample": ["--num_samples", "4"],
    "examples/captions_and_images.py": ["--steps", "4", "--hidden_size", "16", "--num_layers", "1", "--num_heads", "2",
                                        "--eval_images", "8", "--samples_per_caption", "1"],
}
FENCED_BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)


@dataclass
class Block:
    language: str
    text: str
    line: int


def blocks_of(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [Block(found.group(1), found.group(2), text.count("\n", 0, found.start()) + 1)
            for found in FENCED_BLOCK.finditer(text)]


def name_of(page: Path) -> str:
    return str(page.relative_to(REPO))


RUNNABLE_PAGES = [page for page in PAGES if any(block.language in RUN_LANGUAGES for block in blocks_of(page))]


def test_every_fenced_block_has_a_language_this_test_knows():
    for page in PAGES:
        for block in blocks_of(page):
            assert block.language in (*RUN_LANGUAGES, ""), (
                f"{name_of(page)}:{block.line}: a ```{block.language} block: run it here, or use a plain ``` fence")


def test_the_documentation_site_builds_with_no_warning(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-6000:]
    assert (tmp_path / "site" / "api" / "tokenizers" / "index.html").is_file()
    included = (tmp_path / "site" / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert "held-out results on 276 images" in included and "--8&lt;--" not in included  # the README's parts


# The world the pages are written in.

@pytest.fixture(scope="session")
def quickstart_tokenizer(tmp_path_factory) -> Path:
    """The tokenizer the quickstart writes, trained with `SMALL_RUNS`' overrides."""
    out = tmp_path_factory.mktemp("quickstart")
    assert run("train", ["--config", str(REPO / "training" / "configs" / "quickstart.yaml"), *SMALL_RUNS["train"],
                         f"training.output_dir={out}"]) == 0
    return out / "tokenizer"


def upload(repo_id: str, folder: Path, repo_type: str = "model") -> None:
    HfApi().create_repo(repo_id, repo_type=repo_type)
    HfApi().upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type)


def pretrained_checkpoints(world: Path, store: Path) -> None:
    """Small models under the names of `vqtok convert`'s examples: a full Janus model on the Hub (the VQ
    model under `model.vqmodel.`), LlamaGen's `.pt` on the Hub, Chameleon's and taming's Lightning
    checkpoints and a diffusers pipeline's `vqvae` in local folders."""
    from test_convert_checkpoint import llamagen_names, tiny_diffusers, tiny_janus, write_taming_ckpt  # diffusers: slow

    janus = tiny_janus()
    janus.save_pretrained(store / "janus_vq")
    vq_config = (store / "janus_vq" / "config.json").read_text()
    (store / "janus").mkdir()
    (store / "janus" / "config.json").write_text(f'{{"model_type": "janus", "vq_config": {vq_config}}}')
    tensors = {f"model.vqmodel.{name}": tensor.contiguous() for name, tensor in janus.state_dict().items()}
    save_file({**tensors, "model.language_model.embed_tokens.weight": torch.zeros(4, 4)},
              str(store / "janus" / "model.safetensors"))
    upload("deepseek-community/Janus-Pro-1B", store / "janus")

    (store / "llamagen").mkdir()
    torch.save({"model": llamagen_names(tiny_janus().state_dict())}, store / "llamagen" / "vq_ds16_c2i.pt")
    upload("FoundationVision/LlamaGen", store / "llamagen")

    (world / "path/to/chameleon/tokenizer").mkdir(parents=True)
    write_taming_ckpt(world / "path/to/chameleon/tokenizer/vqgan.ckpt", tiny_diffusers())
    write_taming_ckpt(world / "path/to/last.ckpt", tiny_diffusers())
    tiny_diffusers().save_pretrained(world / "path/to/ldm-pipeline/vqvae")


def small_gpt2(store: Path) -> None:
    """A two-layer stand-in for GPT-2 under its Hub name: a byte-level BPE tokenizer whose only special
    token is `<|endoftext|>` (no pad token, as GPT-2's), and a GPT-2 model of its vocabulary."""
    from tiny_data import tiny_text_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    text = tiny_text_tokenizer(["a photograph of a cat", "a patch of photograph"], vocab_size=300, pad=False)
    text.save_pretrained(store / "gpt2")
    eos = text.eos_token_id
    GPT2LMHeadModel(GPT2Config(vocab_size=len(text), n_embd=16, n_layer=2, n_head=2, bos_token_id=eos,
                               eos_token_id=eos)).save_pretrained(store / "gpt2")
    upload("openai-community/gpt2", store / "gpt2")


@pytest.fixture
def world(tmp_path, local_hub, quickstart_tokenizer, monkeypatch):
    """A fresh working folder holding what the pages name, made the current folder."""
    world = tmp_path / "world"
    world.mkdir()
    for name in ("training", "examples", "docs", "mkdocs.yml", "README.md"):
        (world / name).symlink_to(REPO / name)
    image_folder(world / "path" / "to" / "images", 40)
    shutil.copytree(quickstart_tokenizer, world / "outputs" / "quickstart" / "tokenizer")
    pictures = tmp_path / "pictures"
    image_folder(pictures / "train", 24, split="train")
    image_folder(pictures / "test", 8)
    upload("your-name/pictures", pictures, repo_type="dataset")
    monkeypatch.chdir(world)
    return world


# Running a page.

def commands_of(block: Block) -> list[list[str]]:
    """The commands of a bash block: lines joined at a trailing backslash, comments dropped, `&&`
    chains split."""
    commands = []
    for line in block.text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:end])
            words = words[end + 1:]
    return commands


def training_script_command(script: str) -> str:
    """The `vqtok` command a `training/` script runs."""
    found = re.findall(r'script\("(\w+)"\)', (REPO / script).read_text())
    assert len(found) == 1, f"{script} does not run one vqtok command"
    return found[0]


def child(command: list[str], world: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=world, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{shlex.join(command)} failed:\n{(done.stdout + done.stderr)[-6000:]}"
    return done.stdout + done.stderr


def run_command(words: list[str], world: Path, capsys) -> str | None:
    """Run one command of a bash block; what it printed, or None where it is skipped."""
    program, arguments = words[0], words[1:]
    if program == "pip" or (program == "python" and arguments[:2] == ["-m", "pytest"]):
        return None
    if program == "python" and arguments and arguments[0].startswith("training/"):
        program, arguments = "vqtok", [training_script_command(arguments[0]), *arguments[1:]]
    if program == "vqtok":
        command, argv = arguments[0], [*arguments[1:], *SMALL_RUNS.get(arguments[0], [])]
        status = run(command, argv)
        printed = capsys.readouterr()
        assert status == 0, f"{shlex.join(words)} exited with {status}:\n{printed.err[-6000:]}"
        return printed.out + printed.err
    if program == "python" and arguments and arguments[0].startswith("examples/"):
        return child([sys.executable, *arguments, *SMALL_RUNS.get(arguments[0], [])], world)
    if program == "torchrun":
        script = next(index for index, word in enumerate(arguments) if word.endswith(".py"))
        return child([sys.executable, "-m", "torch.distributed.run", *arguments,
                      *SMALL_RUNS.get(training_script_command(arguments[script]), [])], world)
    if program == "mkdocs":
        return child([sys.executable, "-m", "mkdocs", *arguments], world)
    raise AssertionError(f"this test does not know how to run `{shlex.join(words)}`: teach run_command")


def run_python(block: Block, namespace: dict, world: Path, where: str) -> str:
    code = compile(block.text, where, "exec")
    if not re.search(r"^\s*(import vqtok|from vqtok)", block.text, re.M):
        return child([sys.executable, "-c", block.text], world)
    exec(code, namespace)
    return ""


def check_run_config_fragment(block: Block) -> None:
    from vqtok.training.run_config import build_run_config, read_run_config

    fragment = yaml.safe_load(block.text)
    build_run_config({**read_run_config(str(REPO / "training" / "configs" / "quickstart.yaml")), **fragment})


def printed_lines(text: str) -> set[str]:
    return {numberless(line) for line in text.splitlines() if line.strip()}


def numberless(line: str) -> str:
    return " ".join(re.sub(r"\d+(?:\.\d+)?", "#", line).split())


def run_page(page: Path, world: Path, capsys) -> None:
    """Run every block of `page`, in order."""
    namespace, printed = {"__name__": "__main__"}, ""
    for block in blocks_of(page):
        where = f"{name_of(page)}:{block.line}"
        if block.language == "bash":
            outputs = [run_command(words, world, capsys) for words in commands_of(block)]
            printed += "".join(output for output in outputs if output)
        elif block.language == "python":
            printed += run_python(block, namespace, world, where)
            printed += "".join(capsys.readouterr())
        elif block.language == "yaml":
            check_run_config_fragment(block)
        elif block.language == "text":
            missing = [line for line in block.text.splitlines()
                       if line.strip() and numberless(line) not in printed_lines(printed)]
            assert not missing, f"{where}: the page's commands did not print {missing}"


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=name_of)
def test_every_block_of_the_page_runs(page, world, tmp_path, capsys):
    if "vqtok convert" in page.read_text(encoding="utf-8"):
        pretrained_checkpoints(world, tmp_path / "store")
    if "openai-community/gpt2" in page.read_text(encoding="utf-8"):
        small_gpt2(tmp_path / "store")
    capsys.readouterr()
    run_page(page, world, capsys)
