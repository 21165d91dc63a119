"""Every shipped recipe parses against the current model and data module, over the base recipe."""
from pathlib import Path

import pytest
import yaml

from main import main
from utils.recipes import BASE_RECIPE, read_recipe

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml") if p != BASE_RECIPE)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_parses_with_the_cli_over_the_base_recipe(config, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    merged = read_recipe(config)
    for section in ("model", "data"):
        for key, value in merged[section].items():
            shown = printed[section][key]
            if isinstance(value, dict) and key == "distillation":  # a settings object: its defaults are shown too
                shown = {k: shown[k] for k in value}
            assert shown == value, f"{section}.{key}"
    for key, value in merged.get("trainer", {}).items():
        assert printed["trainer"][key] == value, f"trainer.{key}"


def test_deltas_do_not_repeat_the_base_recipe():
    base = yaml.safe_load(BASE_RECIPE.read_text())
    for config in CONFIGS:
        delta = yaml.safe_load(config.read_text()) or {}
        repeated = [f"{section}.{key}" for section, values in delta.items() if isinstance(values, dict)
                    for key, value in values.items() if base.get(section, {}).get(key) == value]
        assert not repeated, f"{config.name} repeats the base recipe: {repeated}"


def test_published_configs_follow_the_paper_recipe():
    for dim, (channels, rows) in {4096: (1024, 4), 512: (256, 2), 128: (64, 2)}.items():
        cfg = read_recipe(BASE_RECIPE.parent / f"mixvpr_resnet50_{dim}.yaml")
        model, data = cfg["model"], cfg["data"]
        assert (model["backbone_arch"], model["layers_to_crop"], model["agg_arch"]) == ("resnet50", [4], "MixVPR")
        assert (model["agg_config"]["out_channels"], model["agg_config"]["out_rows"]) == (channels, rows)
        assert (model["lr"], model["warmup_steps"], model["milestones"], model["lr_mult"]) == (0.05, 650, [5, 10, 15, 25, 45], 0.3)
        assert (model["loss_name"], model["miner_name"]) == ("MultiSimilarityLoss", "MultiSimilarityMiner")
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

    cfg = read_recipe(CONFIGS[0].parent / f"{stem}.yaml")
    model, data = cfg["model"], cfg["data"]
    with torch.device("meta"):
        network = VPRModel(**{**model, "pretrained": False, "image_size": data["image_size"]})
    assert network.descriptor_dim == int(stem.rsplit("_", 1)[1])
    trainable = (model["backbone_config"]["num_trainable_blocks"] if "backbone_config" in model
                 else model["layers_to_freeze"])
    assert (trainable, model["lr"], model["weight_decay"], data["batch_size"], data["image_size"],
            cfg["trainer"]["max_epochs"]) == recipe
    assert model["optimizer"] == "adamw" and cfg["trainer"]["precision"] == "16-mixed"
    # evaluated at the authors' test size
    assert data["eval_image_size"] == ([384, 384] if "resnet50" in stem else [322, 322])


def test_salad_config_decays_the_learning_rate_linearly_per_step_as_its_recipe():
    model = read_recipe(CONFIGS[0].parent / "salad_dinov2_8448.yaml")["model"]
    assert (model["lr_schedule"], model["lr_end_factor"], model["lr_decay_steps"]) == ("linear", 0.2, 4000)
    assert (model["warmup_steps"], model["milestones"]) == (0, [])


def test_boq_demo_differs_from_the_demo_only_in_its_aggregator():
    demo, boq = (read_recipe(CONFIGS[0].parent / f"{stem}.yaml") for stem in ("synthetic_demo", "synthetic_demo_boq"))
    assert {k: v for k, v in boq["model"].items() if not k.startswith("agg_")} == \
           {k: v for k, v in demo["model"].items() if not k.startswith("agg_")}
    assert (boq["data"], boq["trainer"]) == (demo["data"], demo["trainer"])
    assert (demo["model"]["agg_arch"], boq["model"]["agg_arch"]) == ("MixVPR", "BoQ")
    import torch

    from main import VPRModel
    with torch.device("meta"):
        model = VPRModel(**{**boq["model"], "image_size": boq["data"]["image_size"]})
    assert model.descriptor_dim == 512 and model.aggregator.proj_c.in_channels == 256
