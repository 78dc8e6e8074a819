"""Several CPU processes are one data-parallel job: `torchrun --nproc_per_node 2` runs
training/train_tokenizer.py as 2 gloo processes that report 2 processes, double the global batch,
end with identical codebooks and leave the writing to rank 0; lone processes that were launched as
a group fail loudly instead of training side by side into one output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from vqtok.parallel import launch

REPO = Path(__file__).resolve().parents[1]
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "ACCELERATE_USE_CPU", *launch.WORLD_SIZE_VARIABLES)
TIMEOUT_S = 180

# Runs `vqtok train`'s `main` on one rank, and records what that rank did: its view of
# the job, the `save_pretrained` calls it made and its final weights and buffers (the codebook).
RANK_RECORDER = textwrap.dedent('''
    import json, os, sys
    import transformers
    from safetensors.torch import save_file
    import vqtok.commands.train as script

    record_dir = sys.argv[2]
    sys.argv = [sys.argv[1], *sys.argv[3:]]

    saves, seen = [], {}
    save_pretrained = transformers.PreTrainedModel.save_pretrained
    def recorded_save(self, save_directory, *args, **kwargs):
        saves.append(str(save_directory))
        return save_pretrained(self, save_directory, *args, **kwargs)
    transformers.PreTrainedModel.save_pretrained = recorded_save

    train = script.train_tokenizer
    def train_and_record(model, train_set, eval_set, args, accelerator, **kwargs):
        results = train(model, train_set, eval_set, args, accelerator, **kwargs)
        seen.update(process_index=accelerator.process_index, num_processes=accelerator.num_processes,
                    is_main_process=accelerator.is_main_process)
        state = {name: value.detach().clone().contiguous() for name, value in model.state_dict().items()}
        save_file(state, os.path.join(record_dir, f"rank{accelerator.process_index}.safetensors"))
        return results
    script.train_tokenizer = train_and_record

    script.main()
    with open(os.path.join(record_dir, f"rank{seen['process_index']}.json"), "w") as handle:
        json.dump({**seen, "saves": saves}, handle)
''')

TINY_RUN = [
    "--config", str(REPO / "training" / "configs" / "vq.yaml"),
    "model.image_size=16", "model.backbone_config.base_channels=8", "model.latent_dim=8", "model.codebook_size=16",
    "training.max_steps=3", "training.batch_size=4", "training.warmup_steps=1", "training.log_every=1",
    "training.report_to=none", "data.eval_split=null",
]


def child_env(**extra) -> dict:
    """This environment without any launcher's variables, on one thread per process, with no GPU in
    sight (these tests are about launches on CPUs)."""
    env = {name: value for name, value in os.environ.items() if name not in LAUNCH_VARIABLES}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", **extra}


def test_torchrun_trains_one_job_over_two_cpu_processes(tmp_path):
    out, records = tmp_path / "run", tmp_path / "ranks"
    records.mkdir()
    recorder = tmp_path / "record_rank.py"
    recorder.write_text(RANK_RECORDER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(recorder), str(REPO / "training" / "train_tokenizer.py"), str(records),
               *TINY_RUN, f"training.output_dir={out}"]
    done = subprocess.run(command, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]

    assert ", 2 process(es)" in log and "1 process(es)" not in log
    assert log.count("saved tokenizer to") == 1  # printed by the main process after writing
    ranks = [json.loads((records / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [(r["process_index"], r["num_processes"], r["is_main_process"]) for r in ranks] == [
        (0, 2, True), (1, 2, False)]
    assert ranks[0]["saves"] == [str(out / "tokenizer")] and ranks[1]["saves"] == []

    meta = json.loads((out / "tokenizer" / "config.json").read_text())["training_metadata"]
    assert meta["num_processes"] == 2 and meta["batch_size_per_process"] == 4
    assert meta["global_batch_size"] == 2 * 4 * meta["gradient_accumulation_steps"]

    first, second = (load_file(records / f"rank{rank}.safetensors") for rank in range(2))
    assert first.keys() == second.keys() and "quantizer.codebook.weight" in first
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"ranks ended with different tensors: {different}"
    saved = load_file(out / "tokenizer" / "model.safetensors")
    assert torch.equal(saved["quantizer.codebook.weight"], first["quantizer.codebook.weight"])


def test_lone_processes_launched_as_a_group_fail_loudly(tmp_path):
    """Two processes launched together whose Accelerate state was made before vqtok could ask for the
    CPU (a bare `PartialState()`: no GPU, so Accelerate sees one process each) must not train as two
    1-process jobs writing one folder: `make_accelerator` and `process_state` raise on every rank."""
    out = tmp_path / "shared_output"
    script = tmp_path / "lone.py"
    script.write_text(textwrap.dedent(f'''
        import os
        from accelerate import PartialState
        from vqtok.tokens.tokenization import process_state
        from vqtok.training import TrainingArguments, make_accelerator

        PartialState()
        lines = []
        for make in (lambda: make_accelerator(TrainingArguments(output_dir={str(out)!r}, report_to="none")),
                     process_state):
            try:
                make()
            except RuntimeError as error:
                lines.append(f"rank {{os.environ['RANK']}} RuntimeError: {{error}}")
            else:
                lines.append("no error")
        # One file per rank: two processes printing to one pipe may interleave their lines.
        with open(os.path.join({str(tmp_path)!r}, f"rank{{os.environ['RANK']}}.txt"), "w") as handle:
            handle.writelines(line + chr(10) for line in lines)
    '''))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    done = subprocess.run(command, env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = sorted(line for rank in range(2) for line in (tmp_path / f"rank{rank}.txt").read_text().splitlines())
    assert len(lines) == 4 and all("RuntimeError: the launcher started 2 processes" in line for line in lines), lines
    assert [line[:6] for line in lines] == ["rank 0", "rank 0", "rank 1", "rank 1"]
    assert any("Accelerate sees 1" in line and str(out) in line and "torchrun --nproc_per_node N" in line
               for line in lines)
    assert not out.exists()


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_launch_without_a_gpu_asks_accelerate_for_the_cpu(no_launcher):
    assert launch.launched_processes() == 1 and launch.accelerator_options() == {"cpu": False}
    no_launcher.setenv("WORLD_SIZE", "2")
    assert launch.launched_processes() == 2
    no_launcher.setattr(torch.cuda, "is_available", lambda: False)
    assert launch.accelerator_options() == {"cpu": True}
    no_launcher.setattr(torch.cuda, "is_available", lambda: True)  # GPU launches keep their device
    assert launch.accelerator_options() == {"cpu": False}
    no_launcher.setenv("ACCELERATE_USE_CPU", "true")
    assert launch.use_cpu()


def test_check_launch_compares_the_state_with_the_launch(no_launcher, recwarn):
    launch.check_launch(SimpleNamespace(num_processes=1, distributed_type="NO"))
    no_launcher.setenv("WORLD_SIZE", "2")
    launch.check_launch(SimpleNamespace(num_processes=2, distributed_type="MULTI_CPU"))
    with pytest.raises(RuntimeError, match=r"started 2 processes .* sees 1 \(NO\).*write out/run"):
        launch.check_launch(SimpleNamespace(num_processes=1, distributed_type="NO"), "out/run")
    assert not recwarn.list


def test_accelerate_launch_cpu_with_one_process_is_warned_about(no_launcher):
    """`accelerate launch --cpu --num_processes 2` runs the script once, with these variables."""
    no_launcher.setenv("ACCELERATE_USE_CPU", "True")
    no_launcher.setenv("MASTER_ADDR", "127.0.0.1")
    no_launcher.setenv("MASTER_PORT", "29500")
    with pytest.warns(UserWarning, match="only process.*torchrun --nproc_per_node N"):
        launch.check_launch(SimpleNamespace(num_processes=1, distributed_type="NO"))
