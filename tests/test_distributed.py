"""stages.train under `torchrun --nproc_per_node=2` on the CPU (gloo): one model, a fair split of each epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from cnn_factory.config import load_params
from cnn_factory.data.dataset import PreparedSplit, ShardedBatches, make_loader
from cnn_factory.model import ModelFile, load_model
from cnn_factory.training.loop import Placement
from cnn_factory.training.losses import Criterion
from cnn_factory.training.validation import ResizedValidation
from tests.conftest import make_repo, run, tiny_params

pytestmark = pytest.mark.slow  # end to end through real processes; `pytest -m "not slow"` skips it


@pytest.mark.parametrize(("size", "batch_size", "world"), [(34, 8, 2), (17, 8, 2), (35, 4, 3), (9, 8, 4)])
def test_sharded_batches_cover_each_index_once_in_equal_steps(size, batch_size, world):
    shards = [ShardedBatches(size, batch_size, True, torch.Generator().manual_seed(0), r, world) for r in range(world)]
    batches = [list(s) for s in shards]
    assert len({len(b) for b in batches}) == 1  # every rank takes the same number of steps
    assert all(len(batch) <= batch_size and batch for b in batches for batch in b)
    seen = sorted(i for b in batches for batch in b for i in batch)
    assert seen == list(range(size))
    again = [list(ShardedBatches(size, batch_size, True, torch.Generator().manual_seed(0), 0, world))]
    assert again[0] == batches[0]  # the same generator state draws the same epoch


def test_single_process_loader_keeps_torch_samplers():
    """world=1 draws exactly what it drew before DDP existed: RandomSampler batched by BatchSampler."""
    loader = make_loader(list(range(10)), 4, True, generator=torch.Generator().manual_seed(0), num_augs=1)
    assert isinstance(loader.sampler, BatchSampler)
    order = [i for batch in loader.sampler for i in batch]
    assert order == torch.randperm(20, generator=torch.Generator().manual_seed(0)).tolist()


def test_torchrun_two_processes_train_one_model(tmp_path, monkeypatch):
    params = tiny_params()
    # the index space holds the augmented repeats too; two batches per step: the first without
    # DDP's all-reduce (no_sync), the second with it
    params["train"].update(num_augs=1, accumulate=2)
    repo = make_repo(tmp_path / "repo", params)
    run(["dvc", "repro", "prepare"], repo)
    log = tmp_path / "samples.txt"
    monkeypatch.setenv("CNN_FACTORY_LOG_SAMPLES", str(log))
    result = run(["torchrun", "--nproc_per_node=2", "--standalone", "-m", "stages.train"], repo)
    assert "2 processes" in result.stdout

    assert sorted(p.name for p in (repo / "models").iterdir()) == ["example.pt"]
    # rank 0 alone logs: one dvclive folder, and its copy beside the checkpoint
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("metrics.json")) == [
        "checkpoints/example.dvclive/metrics.json",
        "dvclive/metrics.json",
    ]
    assert json.loads((repo / "dvclive" / "metrics.json").read_text())["step"] == 1
    assert sorted(p.name for p in (repo / "checkpoints").iterdir()) == ["example.ckpt", "example.dvclive"]

    n = len(np.load(repo / "data" / "prepared" / "train" / "image.npy", mmap_mode="r")) * 2
    lines = [list(map(int, line.split())) for line in log.read_text().splitlines()]
    by_rank = {r: [line[1:] for line in lines if line[0] == r] for r in (0, 1)}
    assert [len(epochs) for epochs in by_rank.values()] == [2, 2]
    for epoch in range(2):
        share = [by_rank[0][epoch], by_rank[1][epoch]]
        assert not set(share[0]) & set(share[1])
        assert sorted(share[0] + share[1]) == list(range(n))  # each sample exactly once per epoch
    assert by_rank[0][0] != by_rank[0][1]  # shuffled anew each epoch

    # the model file's val metrics are the whole val split's, as one process computes them (each rank
    # validated its share and the sums were added up)
    cfg = load_params(repo / "params.yaml")
    model, saved = load_model(repo / "models" / "example.pt")
    val = PreparedSplit(repo / "data" / "prepared" / "val", list(cfg.inputs), cfg.outputs)
    stats = {name: o for name, o in saved["model_args"]["outputs"].items() if "std" in o}  # a number's std
    norm = ModelFile.from_meta(saved).normalisation("cpu")
    placement = Placement(device=torch.device("cpu"), stats=norm)
    validate = ResizedValidation(split=val, outputs=cfg.outputs, batch_size=cfg.train.batch_size, placement=placement)
    again = validate(model, Criterion(cfg.outputs, stats), torch.device("cpu"))
    assert saved["val"].keys() == again.keys()
    for key, value in again.items():
        assert value == pytest.approx(saved["val"][key], abs=1e-5), key
