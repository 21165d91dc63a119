"""Distillation end to end on tiny synthetic data: a trained teacher's checkpoint drives a student's fit
from the command line; the teacher stays outside the student's weights, optimizer and checkpoint. DINOv2
models (BoQ, SALAD) serve as teachers and as students, at image sizes other than their partner's."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from main import VPRModel, load_model, main
from models.distillation import Teacher
from tiny_cli import model_args, tiny_cli_args, tiny_vit
from utils.agreement import similarity_agreement
from utils.errors import CheckpointError

STUDENT = {"backbone_arch": "resnet18", "layers_to_crop": [3, 4], "layers_to_freeze": 0,
           "agg_config": {"out_channels": 8, "mix_depth": 1, "out_rows": 2}}


def tiny_args(synthetic, logs: Path, name: str) -> list[str]:
    return tiny_cli_args(synthetic, logs, epochs=1, name=name) + [
        "--data.val_sets", "[pitts30k_val]", "--trainer.enable_model_summary", "false"]


def student_args() -> list[str]:
    return [a for k, v in STUDENT.items() for a in (f"--model.{k}", v if isinstance(v, str) else json.dumps(v))]


@pytest.fixture(scope="module")
def teacher_checkpoint(synthetic, tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("teacher_logs")
    cli = main(tiny_args(synthetic, logs, "teacher"))
    return Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"


@pytest.mark.parametrize("loss", ["similarity", "projection"])
def test_student_fit_with_teacher_checkpoint_distils_and_saves_a_standalone_student(
        synthetic, teacher_checkpoint, tmp_path, loss):
    cli = main(tiny_args(synthetic, tmp_path, "student") + student_args() + [
        "--model.distillation", json.dumps({"teacher_checkpoint": str(teacher_checkpoint), "loss": loss})])
    student = cli.model
    distill = cli.trainer.callback_metrics["distill_loss"]
    assert math.isfinite(float(distill)) and float(distill) > 0
    # the teacher is a trained 32-d model, not the student's own weights
    assert student.teacher is not None and student.teacher.descriptor_dim == 32 != student.descriptor_dim

    teacher_params = {id(p) for p in student.teacher.model.parameters()}
    optimized = {id(p) for group in cli.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized and not optimized & teacher_params
    own_keys = set(VPRModel(**STUDENT, agg_arch="MixVPR", image_size=(32, 32)).state_dict())
    extra = set(student.state_dict()) - own_keys
    assert not any(k.startswith("teacher") for k in student.state_dict())
    assert extra == ({"distill_loss_fn.proj.weight"} if loss == "projection" else set())

    # the same seed rebuilds the initial student: its frozen conv1 is unchanged, the trained layers moved
    torch.manual_seed(0)
    initial = VPRModel(**STUDENT, agg_arch="MixVPR", image_size=(32, 32)).backbone.model
    trained = student.backbone.model
    torch.testing.assert_close(trained.conv1.weight, initial.conv1.weight)
    for layer in ("layer1", "layer2"):
        assert not torch.equal(getattr(trained, layer)[0].conv1.weight, getattr(initial, layer)[0].conv1.weight)

    # the saved student loads and embeds on its own: the teacher's file is not needed
    moved = teacher_checkpoint.with_suffix(".away")
    teacher_checkpoint.rename(moved)
    try:
        reloaded = load_model(Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt")
    finally:
        moved.rename(teacher_checkpoint)
    assert not hasattr(reloaded, "teacher")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), student.eval()(images))


RECORD_TEACHER_INPUTS = ["--trainer.callbacks", '[{"class_path": "tiny_cli.TeacherInputs"}]']


def distillation_args(teacher: Path, loss: str = "similarity", **settings) -> list[str]:
    return ["--model.distillation", json.dumps({"teacher_checkpoint": str(teacher), "loss": loss, **settings})]


def teacher_inputs(cli) -> list[tuple[int, ...]]:
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == "TeacherInputs").shapes


def resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What the teacher does to a student's images of another size."""
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def optimized_ids(cli) -> set[int]:
    return {id(p) for group in cli.trainer.optimizers[0].param_groups for p in group["params"]}


def test_dinov2_boq_teacher_distils_into_a_mobilenet_student_at_another_image_size(synthetic, tmp_path, tiny_dinov2):
    teacher_run = main(tiny_args(synthetic, tmp_path / "teacher", "boq_teacher") + model_args(tiny_vit("BoQ")))
    checkpoint = Path(teacher_run.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    student = {"backbone_arch": "mobilenet_v3_small", "layers_to_crop": [4], "layers_to_freeze": -1}
    cli = main(tiny_args(synthetic, tmp_path, "student") + model_args(student) + distillation_args(checkpoint)
               + RECORD_TEACHER_INPUTS)
    teacher = cli.model.teacher
    assert type(teacher.model.backbone).__name__ == "DINOv2" and teacher.descriptor_dim == 64 * 2
    # the student's 32 x 32 batches of 4 places x 4 images reach the teacher at its own 28 x 28
    assert tuple(cli.model.image_size) == (32, 32) and teacher.image_size == (28, 28)
    assert teacher_inputs(cli) == [(16, 3, 28, 28)] * 2
    assert math.isfinite(float(cli.trainer.callback_metrics["distill_loss"]))
    assert not optimized_ids(cli) & {id(p) for p in teacher.model.parameters()}
    # the teacher embeds as the trained BoQ model does on the resized images
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(images), load_model(checkpoint)(resized(images, (28, 28))))


@pytest.mark.parametrize("agg,loss", [("BoQ", "similarity"), ("SALAD", "projection")])
def test_dinov2_student_distils_from_a_resnet_teacher(synthetic, teacher_checkpoint, tmp_path, tiny_dinov2, agg, loss):
    cli = main(tiny_args(synthetic, tmp_path, "student") + model_args(tiny_vit(agg))
               + distillation_args(teacher_checkpoint, loss) + RECORD_TEACHER_INPUTS)
    student = cli.model
    side = tiny_vit(agg)["image_size"][0]
    assert tuple(student.image_size) == (side, side) and student.teacher.image_size == (32, 32)
    assert teacher_inputs(cli) == [(16, 3, 32, 32)] * 2
    assert math.isfinite(float(cli.trainer.callback_metrics["distill_loss"]))
    trainable = {id(p) for p in student.parameters() if p.requires_grad}
    assert optimized_ids(cli) == trainable
    assert not trainable & {id(p) for p in student.backbone.model.blocks[0].parameters()}
    if loss == "projection":
        assert student.distill_loss_fn.proj.weight.shape == (32, student.descriptor_dim)
    # the student's checkpoint is a DINOv2 model of its own: it loads and embeds without the teacher
    reloaded = load_model(Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt")
    images = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), student.eval()(images))


def test_bare_dinov2_salad_teacher_takes_its_architecture_from_teacher_config(synthetic, tmp_path, tiny_dinov2):
    torch.manual_seed(1)
    trained = VPRModel(**tiny_vit("SALAD")).eval()
    bare = tmp_path / "salad_teacher.pth"
    torch.save(trained.state_dict(), bare)
    config = {**tiny_vit("SALAD"), "image_size": [42, 42]}
    cli = main(tiny_args(synthetic, tmp_path, "student") + student_args()
               + distillation_args(bare, teacher_config=config))
    teacher = cli.model.teacher
    assert teacher.model.backbone.return_token and teacher.model.backbone.norm_layer
    assert teacher.image_size == (42, 42) and math.isfinite(float(cli.trainer.callback_metrics["distill_loss"]))
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = trained(resized(images, (42, 42)))
        torch.testing.assert_close(teacher(images), expected)
        # backbone_config holds no weights: without it the same file loads, but embeds differently (no class
        # token, no final norm)
        plain = Teacher.from_checkpoint(bare, **{k: v for k, v in config.items() if k != "backbone_config"})
        assert not torch.allclose(plain(images), expected, atol=1e-3)

    with pytest.raises(CheckpointError, match=r"distillation teacher .*salad_teacher.pth: .*bare state_dict(.|\n)*"
                                              r"distillation.teacher_config"):
        main(tiny_args(synthetic, tmp_path, "student") + student_args() + distillation_args(bare))


def _unit_rows(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_agreement_is_perfect_for_identical_and_rotated_descriptors():
    teacher = _unit_rows(60, 16, 0)
    rotation = np.linalg.qr(np.random.default_rng(1).standard_normal((16, 16)))[0]
    for student in (teacher, teacher @ rotation):
        agreement = similarity_agreement(student, teacher)
        assert agreement["mse"] == pytest.approx(0.0, abs=1e-10)
        assert agreement["pearson"] == pytest.approx(1.0)
        assert agreement["spearman"] == pytest.approx(1.0)
        assert agreement["topk_overlap"] == pytest.approx(1.0)


def test_agreement_is_worse_for_unrelated_descriptors_of_another_size():
    agreement = similarity_agreement(_unit_rows(200, 8, 2), _unit_rows(200, 32, 3))
    assert agreement["mse"] > 0.05
    assert abs(agreement["pearson"]) < 0.1 and abs(agreement["spearman"]) < 0.1
    assert agreement["topk_overlap"] < 0.15  # chance level is 10 / 199


def test_agreement_rejects_descriptors_of_different_images():
    with pytest.raises(ValueError, match="same images"):
        similarity_agreement(_unit_rows(20, 8, 0), _unit_rows(21, 8, 0))
