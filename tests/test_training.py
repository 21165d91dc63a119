"""End to end on tiny synthetic data: fit + validate from the command line, resume, and DDP recall."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from main import VPRModel, main
from tiny_cli import tiny_cli_args
from utils.checkpoint import load_weights, read_state_dict

REPO = Path(__file__).resolve().parents[1]


def test_fit_validates_checkpoints_and_resumes(synthetic, tmp_path, capsys):
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=2))
    printed = capsys.readouterr()
    assert "Recall@K (%) on pitts30k_val before training" in printed.out  # the untrained baseline
    assert "Recall@K (%) on pitts30k_val after epoch 2" in printed.out
    metrics = cli.trainer.callback_metrics
    assert {"pitts30k_val/R1", "pitts30k_val/R5", "pitts30k_val/R10", "msls_val/R1", "loss", "b_acc"} <= set(metrics)
    ckpt_dir = Path(cli.trainer.checkpoint_callback.dirpath)
    ckpts = sorted(p.name for p in ckpt_dir.glob("*.ckpt"))
    assert "last.ckpt" in ckpts and sum(n.startswith("epoch") for n in ckpts) == 2
    assert not list(ckpt_dir.glob("*.tmp"))
    # the checkpoint rebuilds the model from its saved hyper-parameters and loads strictly
    state, hparams = read_state_dict(ckpt_dir / "last.ckpt")
    model = VPRModel(**hparams)
    load_weights(model, state)
    assert model.descriptor_dim == 32 and tuple(hparams["image_size"]) == (32, 32)
    # resuming continues at the next epoch, from the saved step count
    resumed = main(tiny_cli_args(synthetic, tmp_path, epochs=3) + ["--ckpt_path", str(ckpt_dir / "last.ckpt")])
    assert resumed.trainer.current_epoch == 3 and resumed.trainer.global_step == 6
    # in the same run folder, keeping the best checkpoints of the first part
    assert Path(resumed.trainer.checkpoint_callback.dirpath) == ckpt_dir
    assert sum(p.name.startswith("epoch") for p in ckpt_dir.glob("*.ckpt")) == 3


def test_training_lowers_the_loss(synthetic):
    """A few SGD steps on one fixed batch reduce the multi-similarity loss (the gradients are wired)."""
    from dataloaders.gsv_cities import GSVCitiesDataset
    from dataloaders.synthetic import SYNTHETIC_CITIES
    from dataloaders.transforms import TrainTransform, normalize_batch
    torch.manual_seed(0)
    ds = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES[:1], transform=TrainTransform((32, 32), 0))
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), miner_name="none")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss, _ = model.metric_loss(model(normalize_batch(batch[0].flatten(0, 1))), batch[1].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_missing_data_root_fails_at_setup_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="GSV-Cities not found"):
        main(["--config", str(REPO / "configs" / "synthetic_demo.yaml"), "--data.synthetic", "false",
              "--data.gsv_root", str(tmp_path / "missing"), "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])


def test_ddp_recall_equals_single_process(synthetic, tmp_path):
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        out.mkdir()
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_validate.py"), str(synthetic["pitts"]),
                               str(devices), str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = (np.load(out / "descriptors.npy"), json.loads((out / "recall.json").read_text()))
    np.testing.assert_allclose(results[2][0], results[1][0], atol=1e-5)
    assert results[2][1] == results[1][1]
    assert len(results[1][0]) % 2 == 1  # the odd count made the distributed sampler pad
