"""Training with several processes is training with one: same places per step, same loss, same update;
and a resumed run continues where the checkpoint left off."""
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from ddp_collectives import collectives_worker
from ddp_train import PLACES_PER_STEP, Recorder
from lightning.pytorch.callbacks import ModelCheckpoint

from dataloaders.datamodule import VPRDataModule
from main import VPRModel

REPO = Path(__file__).resolve().parents[1]
CITIES = ["Synthville", "Pixelburg", "Rendertown"]


def train(synthetic, out: Path, devices: int) -> dict:
    """Run tests/ddp_train.py in float64 (rounding out of the way): steps per rank and first-step weights."""
    out.mkdir()
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_train.py"), str(synthetic["gsv_cities"]),
                           str(devices), str(out), "--precision", "64-true"],
                          cwd=out, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"steps": [json.loads((out / f"steps_rank{r}.json").read_text()) for r in range(devices)],
            "initial": torch.load(out / "initial.pt"), "first_step": torch.load(out / "first_step.pt")}


def same_city_share(places: list[int], city_of_place: np.ndarray) -> float:
    """Share of the pairs of a step's places that come from the same city."""
    cities = city_of_place[places]
    same = (cities[:, None] == cities[None]).sum() - len(cities)
    return same / (len(cities) * (len(cities) - 1))


def test_two_processes_train_exactly_like_one(synthetic, tmp_path):
    from dataloaders.gsv_cities import GSVCitiesDataset
    city_of_place = GSVCitiesDataset(synthetic["gsv_cities"], CITIES).city_of_place
    one, two = train(synthetic, tmp_path / "one", 1), train(synthetic, tmp_path / "two", 2)
    single, ranks = one["steps"][0], two["steps"]
    assert len(ranks[0]) == len(ranks[1]) == len(single) and len(single) >= 6  # two epochs of several steps
    for step, rank0, rank1 in zip(single, *ranks):
        # each step's places: rank 0 the first half of the single-process step, rank 1 the second
        places = step["places"]
        assert rank0["places"] + rank1["places"] == places[:len(places) - len(places) % 2]
        assert len(rank0["places"]) == len(rank1["places"]) and len(places) <= PLACES_PER_STEP
        if len(places) % 2 == 0:
            shares = [same_city_share(p, city_of_place) for p in (places, rank0["places"] + rank1["places"])]
            assert shares[0] == shares[1]
        # the loss and the miner's statistics are those of the whole step, on every rank
        for rank in (rank0, rank1):
            assert rank["loss"] == pytest.approx(step["loss"], rel=1e-9, abs=1e-12)
            assert rank["b_acc"] == pytest.approx(step["b_acc"], abs=1e-12)
    for epoch in (0, 1):
        seen = [p for rank in ranks for s in rank if s["epoch"] == epoch for p in s["places"]]
        assert len(seen) == len(set(seen))  # disjoint across ranks and steps
    # identical weights before; after one SGD step (momentum, weight decay) the same to rounding
    assert all(torch.equal(one["initial"][k], two["initial"][k]) for k in one["initial"])
    update_error = sum(((two["first_step"][k] - one["first_step"][k]) ** 2).sum() for k in one["initial"]
                       if one["initial"][k].is_floating_point())
    update = sum(((one["first_step"][k] - one["initial"][k]) ** 2).sum() for k in one["initial"]
                 if one["initial"][k].is_floating_point())
    assert update > 0 and float((update_error / update).sqrt()) < 1e-9
    for key, value in one["first_step"].items():  # parameters and batch-norm running statistics
        torch.testing.assert_close(two["first_step"][key], value, rtol=1e-9, atol=1e-12)


def test_resume_mid_epoch_continues_with_the_places_not_yet_trained(synthetic, tmp_path):
    def fit(ckpt_path=None, every=None):
        L.seed_everything(0)
        model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="GeM", image_size=(32, 32),
                         warmup_steps=0)
        data = VPRDataModule(gsv_root=str(synthetic["gsv_cities"]), cities=CITIES, batch_size=4,
                             image_size=(32, 32), rand_augment_ops=0, num_workers=0, val_sets=[])
        recorder = Recorder(tmp_path)
        callbacks = [recorder]
        if every:
            callbacks.append(ModelCheckpoint(tmp_path / "ckpt", "{step}", every_n_train_steps=every,
                                             save_top_k=-1))
        trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_val_batches=0, num_sanity_val_steps=0,
                            logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=bool(every), callbacks=callbacks)
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return [(s["epoch"], s["places"]) for s in recorder.steps]

    reference = fit(every=3)  # 18 places in steps of 4: 5 steps per epoch
    assert len(reference) == 10
    for step in (3, 6):  # in the middle of epoch 0; the first step of epoch 1
        resumed = fit(ckpt_path=tmp_path / "ckpt" / f"step={step}.ckpt")
        assert resumed == reference[step:]


def test_gather_and_global_batchnorm_give_single_process_values_with_unequal_slices(tmp_path):
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(collectives_worker, args=(port, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["class"] == "GlobalBatchNorm" and result["reverted"] == "BatchNorm2d"
        assert result["output_error"] < 1e-12 and result["input_grad_error"] < 1e-12
        assert result["running_var_error"] < 1e-12
