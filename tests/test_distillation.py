"""Distillation losses transfer the teacher's structure to the student; the teacher stays frozen."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import VPRModel
from models.distillation import (DISTILL_LOSSES, ProjectionDistillation, SimilarityDistillation, Teacher,
                                 build_distill_loss)

TINY = dict(backbone_arch="resnet18", pretrained=False, layers_to_crop=[4], agg_arch="MixVPR",
            agg_config={"out_channels": 16, "out_rows": 4}, image_size=(64, 64))


def _embeddings(batch=8, dim=16, seed=0):
    return F.normalize(torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def _orthonormal_rows(rows, cols, seed=1):
    """(rows, cols) matrix W with W @ W.T = I (rows <= cols): x -> x @ W keeps all dot products."""
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=torch.Generator().manual_seed(seed)))
    return q.T


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = VPRModel(**TINY)
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path, model.eval()


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_similarity_loss_is_zero_when_student_is_a_rotated_teacher(mode):
    teacher = _embeddings()
    student = 3.0 * teacher @ _orthonormal_rows(16, 16)  # rotation and scale keep every cosine
    assert SimilarityDistillation(mode)(student, teacher).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_similarity_loss_is_zero_for_larger_student_with_same_gram_matrix(mode):
    teacher = _embeddings(dim=16)
    student = teacher @ _orthonormal_rows(16, 48)  # 48-d student, same pairwise cosines
    assert SimilarityDistillation(mode)(student, teacher).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_similarity_loss_is_positive_for_different_structure(mode):
    assert SimilarityDistillation(mode)(_embeddings(dim=32, seed=5), _embeddings(dim=16)).item() > 1e-3


@pytest.mark.parametrize("name", sorted(DISTILL_LOSSES))
def test_gradient_reaches_student_and_not_teacher(name):
    student = _embeddings(dim=8, seed=3).requires_grad_(True)
    teacher = _embeddings(dim=16).requires_grad_(True)
    build_distill_loss(name, student_dim=8, teacher_dim=16)(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("name", sorted(DISTILL_LOSSES))
def test_teacher_descriptors_from_inference_mode_are_accepted(name):
    student = _embeddings(dim=8, seed=3).requires_grad_(True)
    with torch.inference_mode():
        teacher = _embeddings(dim=16)
    build_distill_loss(name, student_dim=8, teacher_dim=16)(student, teacher).backward()
    assert student.grad is not None


def test_projection_loss_decreases_when_trained():
    teacher = _embeddings(batch=16, dim=32)
    student = (teacher @ torch.randn(32, 8, generator=torch.Generator().manual_seed(2))).requires_grad_(True)
    loss_fn = ProjectionDistillation(student_dim=8, teacher_dim=32)
    optimizer = torch.optim.Adam([student, *loss_fn.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(student, teacher)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert loss_fn.proj.weight.grad is not None
    assert losses[-1] < 0.5 * losses[0]


def test_build_distill_loss_passes_config_and_rejects_unknown_names():
    loss = build_distill_loss("Similarity", student_dim=8, teacher_dim=16, mode="kl", temperature=0.05)
    assert (loss.mode, loss.temperature) == ("kl", 0.05)
    assert build_distill_loss("projection", 8, 16).proj.weight.shape == (16, 8)
    expected = r"unknown distillation loss 'feature'; choose one of \['projection', 'similarity'\]"
    with pytest.raises(ValueError, match=expected):
        build_distill_loss("feature", 8, 16)
    with pytest.raises(ValueError, match="does not take \\['margin'\\]"):
        build_distill_loss("similarity", 8, 16, margin=0.1)


def test_teacher_from_lightning_checkpoint_reproduces_the_model(teacher_checkpoint):
    path, reference = teacher_checkpoint
    teacher = Teacher.from_checkpoint(path)
    images = torch.randn(3, 3, 64, 64)
    descriptors = teacher(images)
    with torch.no_grad():
        torch.testing.assert_close(descriptors, reference(images))
    assert teacher.descriptor_dim == 64
    assert not descriptors.requires_grad and not descriptors.is_inference()


def test_teacher_is_frozen_and_stays_in_eval(teacher_checkpoint):
    teacher = Teacher.from_checkpoint(teacher_checkpoint[0])
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    teacher.model.train()
    teacher(torch.randn(2, 3, 64, 64))
    assert not teacher.model.training


def test_teacher_held_by_student_is_not_its_submodule(teacher_checkpoint):
    student = VPRModel(**{**TINY, "backbone_arch": "mobilenet_v3_small"})
    own_keys = set(student.state_dict())
    student.teacher = Teacher.from_checkpoint(teacher_checkpoint[0])
    assert set(student.state_dict()) == own_keys
    assert not any(p is q for p in student.parameters() for q in student.teacher.model.parameters())
    student.train()
    assert not student.teacher.model.training


def test_teacher_from_bare_state_dict_needs_architecture(teacher_checkpoint, tmp_path):
    path, reference = teacher_checkpoint
    bare = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), bare)
    with pytest.raises(ValueError, match="bare state_dict.*backbone_arch"):
        Teacher.from_checkpoint(bare)
    teacher = Teacher.from_checkpoint(bare, **{k: v for k, v in TINY.items() if k != "pretrained"})
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(teacher(images), reference(images))


def test_teacher_bf16_autocast_returns_close_float32_descriptors(teacher_checkpoint):
    path, reference = teacher_checkpoint
    images = torch.randn(2, 3, 64, 64)
    descriptors = Teacher.from_checkpoint(path, precision="bf16")(images)
    assert descriptors.dtype == torch.float32
    with torch.no_grad():
        assert (descriptors - reference(images)).abs().max() < 0.05
    with pytest.raises(ValueError, match="unknown teacher precision 'half'"):
        Teacher(reference, precision="half")


@pytest.mark.parametrize("name", sorted(DISTILL_LOSSES))
def test_distillation_step_trains_student_backbone(teacher_checkpoint, name):
    torch.manual_seed(0)
    teacher = Teacher.from_checkpoint(teacher_checkpoint[0])
    student = VPRModel(**{**TINY, "backbone_arch": "mobilenet_v3_small", "layers_to_freeze": -1})
    loss_fn = build_distill_loss(name, student.descriptor_dim, teacher.descriptor_dim)
    images = torch.randn(6, 3, 64, 64)
    loss = loss_fn(student(images), teacher(images))
    loss.backward()
    first_conv = student.backbone.model.features[0][0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.model.parameters())
    assert isinstance(loss_fn, nn.Module)


def test_teacher_resizes_images_of_a_lower_resolution_student(teacher_checkpoint):
    path, reference = teacher_checkpoint
    images = torch.randn(2, 3, 48, 48)
    resized = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(Teacher.from_checkpoint(path)(images), reference(resized))
