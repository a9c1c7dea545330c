"""Tests that need a CUDA GPU (marked ``cuda``; skipped without one).

``benchmarks/gpu_check.sh`` runs them on a GPU machine: bf16 autocast through every learned
model on native-resolution batches, the on-device regridding against the CPU's, the
SyncBatchNorm/DDP path of the trainer's models, and exact checkpoint resume on the GPU.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from test_models_contract import SMALL, make_batch
from test_training import DATA, TinyDataset, TinyModel

from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.models import get_model
from stormfusion.training.trainer import Trainer, TrainingConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
LEARNED = ["unet2d", "convlstm", "sgt"]


@pytest.mark.parametrize("name", LEARNED)
def test_bf16_autocast_step_on_native_batches(name: str) -> None:
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = get_model(
        name, input_frames=4, output_frames=2, modalities=STUDY_MODALITIES, **SMALL[name]
    ).to(device)
    inputs = {m: x.to(device) for m, x in make_batch(size=64).items()}
    target = torch.full((2, 2, 64, 64), 40.0, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = model.training_loss(inputs, torch.ones(2, 4, device=device), target)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_prepare_inputs_on_the_gpu_matches_the_cpu_under_autocast() -> None:
    model = get_model("unet2d", input_frames=4, output_frames=2, modalities=STUDY_MODALITIES)
    batch = make_batch(size=64)
    cpu = model.prepare_inputs(batch, torch.ones(2, 4))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = model.prepare_inputs({m: x.cuda() for m, x in batch.items()}, torch.ones(2, 4))
    for m in STUDY_MODALITIES:
        assert gpu[m].dtype == torch.float32  # regridding runs in float32 under autocast
        torch.testing.assert_close(gpu[m].cpu(), cpu[m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LEARNED)
def test_sync_batchnorm_ddp_step(name: str) -> None:
    """The trainer's multi-GPU model path (SyncBatchNorm + DDP) on a one-rank NCCL group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = get_model(
            name, input_frames=4, output_frames=2, modalities=STUDY_MODALITIES, **SMALL[name]
        )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).cuda()
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
        inputs = {m: x.cuda() for m, x in make_batch(size=64).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = ddp(inputs, torch.ones(2, 4, device="cuda"))
        loss = (pred / 255.0 - 0.2).pow(2).mean()
        loss.backward()
        assert torch.isfinite(loss)
    finally:
        dist.destroy_process_group()


def _trainer(out_dir: Path, epochs: int) -> Trainer:
    args = {"hidden": 8, "dropout": 0.0}
    return Trainer(
        model_name="tiny",
        model_args=args,
        train_set=TinyDataset(24, augment=True),
        val_set=TinyDataset(8, offset=1000),
        out_dir=out_dir,
        config=TrainingConfig(epochs=epochs, batch_size=4, lr=1e-2, seed=0),
        data=DATA,
        build_model=lambda: TinyModel(**args),
        device=torch.device("cuda"),
    )


def test_checkpoint_resume_on_the_gpu_continues_the_same_run(tmp_path: Path) -> None:
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    straight = _trainer(tmp_path / "straight", 2)
    straight.fit()
    _trainer(tmp_path / "resumed", 1).fit()
    resumed = _trainer(tmp_path / "resumed", 2)  # resumes latest.pt of the first epoch
    resumed.fit()
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
