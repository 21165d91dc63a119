"""Validate one fixed model on an evaluation set with N CPU processes; save the descriptors and recall.

Run by tests/test_training.py as ``python tests/ddp_validate.py <pitts_root> <devices> <out_dir>``.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from dataloaders.eval import EvalDataset, build_eval_set  # noqa: E402
from dataloaders.transforms import EvalTransform  # noqa: E402
from main import VPRModel  # noqa: E402


def main(pitts_root: str, devices: int, out_dir: str) -> None:
    L.seed_everything(0)
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR",
                     agg_config={"out_channels": 16, "out_rows": 2}, image_size=(32, 32),
                     keep_eval_descriptors=True)
    full = build_eval_set("pitts30k_val", {"pitts_root": pitts_root}, EvalTransform((32, 32)))
    # an odd number of images, so the distributed sampler pads one rank
    ds = EvalDataset(full.name, full.database_paths, full.query_paths[:-1], full.ground_truth[:-1], full.transform)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.validate(model, DataLoader(ds, batch_size=7))
    if trainer.global_rank == 0:
        out = Path(out_dir)
        np.save(out / "descriptors.npy", model.eval_descriptors[ds.name])
        (out / "recall.json").write_text(json.dumps({str(k): v for k, v in model.eval_recalls[ds.name].items()}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
