"""Every shipped config parses against the current model and data module (no stale or misspelt keys)."""
from pathlib import Path

import pytest
import yaml

from main import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_parses_with_the_cli(config, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(config.read_text())
    for section in ("model", "data"):
        for key, value in written[section].items():
            assert printed[section][key] == value, f"{section}.{key}"


def test_published_configs_follow_the_paper_recipe():
    for dim, (channels, rows) in {4096: (1024, 4), 512: (256, 2), 128: (64, 2)}.items():
        cfg = yaml.safe_load((CONFIGS[0].parent / f"mixvpr_resnet50_{dim}.yaml").read_text())
        model, data = cfg["model"], cfg["data"]
        assert (model["agg_config"]["out_channels"], model["agg_config"]["out_rows"]) == (channels, rows)
        assert (model["lr"], model["warmup_steps"], model["milestones"], model["lr_mult"]) == (0.05, 650, [5, 10, 15, 25, 45], 0.3)
        assert (data["batch_size"], data["img_per_place"], data["image_size"]) == (120, 4, [320, 320])
        assert cfg["trainer"]["precision"] == "16-mixed" and cfg["trainer"]["max_epochs"] == 80


@pytest.mark.parametrize("stem,recipe", [
    # (trainable blocks or frozen stages, lr, weight decay, places per batch, train size, epochs)
    ("salad_dinov2_8448", (4, 6e-5, 9.5e-9, 60, [224, 224], 4)),
    ("boq_dinov2_12288", (2, 1e-4, 1e-4, 128, [224, 224], 40)),
    ("boq_resnet50_16384", (1, 1e-4, 1e-4, 128, [320, 320], 40)),
])
def test_release_configs_build_the_released_architecture_with_its_recipe(stem, recipe):
    import torch

    from main import VPRModel

    cfg = yaml.safe_load((CONFIGS[0].parent / f"{stem}.yaml").read_text())
    model, data = cfg["model"], cfg["data"]
    with torch.device("meta"):
        network = VPRModel(**{**model, "pretrained": False, "image_size": data["image_size"]})
    assert network.descriptor_dim == int(stem.rsplit("_", 1)[1])
    trainable = (model["backbone_config"]["num_trainable_blocks"] if "backbone_config" in model
                 else model["layers_to_freeze"])
    assert (trainable, model["lr"], model["weight_decay"], data["batch_size"], data["image_size"],
            cfg["trainer"]["max_epochs"]) == recipe
    assert model["optimizer"] == "adamw" and cfg["trainer"]["precision"] == "16-mixed"
