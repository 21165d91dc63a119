"""BoQ and SALAD on a (tiny) DINOv2 train with the existing loss, miner and optimizer settings: through the
command line on the tiny synthetic data, with the frozen ViT blocks outside the optimizer and without
gradients, and on a fixed batch, where a few optimizer steps lower the loss."""
import math

import pytest
import torch

from main import VPRModel, main
from tiny_cli import model_args, tiny_cli_args, tiny_vit


def frozen_parameters(model: VPRModel) -> dict[str, torch.nn.Parameter]:
    """The tiny ViT's parameters that must not train: patch and position embeddings, class and mask
    tokens, the first block, and the final norm when the model does not apply it."""
    vit = model.backbone.model
    frozen = {"cls_token": vit.cls_token, "pos_embed": vit.pos_embed, "mask_token": vit.mask_token}
    frozen |= {f"patch_embed.{n}": p for n, p in vit.patch_embed.named_parameters()}
    frozen |= {f"blocks.0.{n}": p for n, p in vit.blocks[0].named_parameters()}
    if not model.backbone.norm_layer:
        frozen |= {f"norm.{n}": p for n, p in vit.norm.named_parameters()}
    return frozen


@pytest.mark.parametrize("agg", ["BoQ", "SALAD"])
def test_vit_model_trains_from_the_command_line_with_frozen_blocks_outside_the_optimizer(
        synthetic, tmp_path, tiny_dinov2, agg):
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=1, name=agg) + model_args(tiny_vit(agg)) + [
        "--data.val_sets", "[pitts30k_val]", "--trainer.enable_model_summary", "false"])
    model = cli.model
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["loss"])) and 0 <= float(metrics["pitts30k_val/R1"]) <= 1
    assert cli.trainer.global_step == 2

    optimized = {id(p) for group in cli.trainer.optimizers[0].param_groups for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert optimized == trainable
    frozen = frozen_parameters(model)
    assert not optimized & {id(p) for p in frozen.values()}
    assert all(p.grad is None for p in frozen.values())

    # the same seed rebuilds the initial model: the frozen part is unchanged, the last block and the head moved
    torch.manual_seed(0)
    initial = VPRModel(**tiny_vit(agg))
    for name, param in frozen_parameters(initial).items():
        torch.testing.assert_close(frozen[name], param, rtol=0, atol=0, msg=name)
    trained_block, initial_block = model.backbone.model.blocks[1], initial.backbone.model.blocks[1]
    assert not torch.equal(trained_block.attn.qkv.weight, initial_block.attn.qkv.weight)
    assert any(not torch.equal(a, b) for a, b in zip(model.aggregator.parameters(), initial.aggregator.parameters()))


@pytest.mark.parametrize("agg", ["BoQ", "SALAD"])
def test_vit_model_lowers_the_loss_on_a_fixed_batch_with_its_own_optimizer(synthetic, tiny_dinov2, agg):
    from dataloaders.gsv_cities import GSVCitiesDataset, collate_places
    from dataloaders.synthetic import SYNTHETIC_CITIES
    from dataloaders.transforms import TrainTransform, normalize_batch

    torch.manual_seed(0)
    settings = tiny_vit(agg)
    ds = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES[:1],
                          transform=TrainTransform(settings["image_size"], 0))
    places, labels, _ = collate_places([ds[i] for i in range(4)])
    images, labels = normalize_batch(places.flatten(0, 1)), labels.flatten()
    # the recipe's optimizer and parameter groups (AdamW, backbone at 0.5 x lr), no warm-up
    model = VPRModel(**settings, optimizer="adamw", lr=1e-3, warmup_steps=0, backbone_lr_mult=0.5)
    [optimizer], _ = model.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4, 1e-3]
    losses = []
    for _ in range(6):
        loss, _ = model.metric_loss(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
