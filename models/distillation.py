"""Knowledge distillation from a frozen VPR teacher into a lightweight student.

Why this exists: the published lightweight-MixVPR code added the frozen teacher's metric loss to the
student's; that term has no path to the student's parameters, so nothing was transferred. Here the
distillation term compares the student's descriptors with the teacher's, so its gradient reaches the
student. Two losses, chosen by name (``DISTILL_LOSSES`` / ``build_distill_loss``):

- ``"similarity"``: match the batch's pairwise cosine-similarity matrices (works for any two
  descriptor sizes, adds no parameters).
- ``"projection"``: a learned linear map student_dim -> teacher_dim, then 1 - cosine to the teacher's
  descriptor (adds parameters, trained with the student and dropped at deployment).

Both take ``(student (B, Ds), teacher (B, Dt))`` and return a scalar; the teacher side is detached.
``Teacher`` loads and freezes the teacher; it is deliberately not an ``nn.Module`` (see its docstring).
``DistillationConfig`` is the one setting of ``VPRModel`` that turns distillation on.
"""
import inspect
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.errors import ConfigError, UserError

from dataloaders.transforms import IMAGENET_MEAN, IMAGENET_STD

from .loading import load_model
from .releases import load_release, release_in


@dataclass
class DistillationConfig:
    """Knowledge distillation: loss = metric loss + ``weight`` x ``loss`` between student and teacher.

    Args:
        teacher_checkpoint: a trained model: one of our Lightning .ckpt files (architecture from its
            hyper-parameters), a published release by name (``release:cosplace_resnet50_2048``, see
            models/releases.py) or a bare state_dict such as the authors' releases (architecture from
            teacher_config, or from the release whose file name it has). Loaded when training starts.
        teacher_config: the teacher's architecture for a bare state_dict (backbone_arch, layers_to_crop,
            agg_arch, agg_config, image_size, backbone_config); overrides a .ckpt's saved values.
        loss: similarity (match the batch's cosine-similarity structure; any descriptor sizes) or
            projection (a learned linear map to the teacher's space, dropped at deployment).
        weight: the distillation term's weight.
        loss_config: the loss's settings (similarity: mode kl|mse, temperature).
        teacher_precision: the teacher's autocast dtype (bf16, 16) or 32; None: the trainer's precision.
    """

    teacher_checkpoint: str
    teacher_config: Optional[dict] = None
    loss: Literal["similarity", "projection"] = "similarity"
    weight: float = 1.0
    loss_config: Optional[dict] = None
    teacher_precision: Optional[Literal["32", "bf16", "16", "fp16"]] = None

    def as_dict(self) -> dict:
        """Plain values, as stored in a checkpoint's hyper-parameters."""
        return asdict(self)


def _target(teacher: Tensor) -> Tensor:
    """The teacher's descriptors as a constant float32 target.

    Tensors made under ``torch.inference_mode`` cannot be saved for backward, hence the clone.
    """
    teacher = teacher.detach()
    if teacher.is_inference():
        teacher = teacher.clone()
    return teacher.float()


def _check_batch(student: Tensor, teacher: Tensor) -> None:
    if student.ndim != 2 or teacher.ndim != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"distillation needs (B, Ds) student and (B, Dt) teacher descriptors of the same "
                         f"images, got {tuple(student.shape)} and {tuple(teacher.shape)}")


class SimilarityDistillation(nn.Module):
    """Match the student's pairwise cosine similarities to the teacher's over a batch.

    mode ``"kl"`` (default): KL(teacher || student) between the rows' softmax over the other B - 1
    images at ``temperature``: each image's ranking of the others, stressing its nearest neighbours,
    which is what retrieval uses. mode ``"mse"``: mean squared difference of the off-diagonal entries of
    the two B x B cosine-similarity matrices (zero exactly when the structures are equal). Both work for
    any two descriptor sizes. KL is the default because it is the one that transferred in
    bench/distillation_transfer.py (synthetic data, 3 seeds: +10.4 R@1 on pitts30k_val); MSE at weight 1
    is a tiny term next to the metric loss, and at weights 10-1000 it hurt the student.
    ``temperature`` only matters for ``"kl"``.
    """

    def __init__(self, mode: str = "kl", temperature: float = 0.1):
        super().__init__()
        if mode not in ("mse", "kl"):
            raise ConfigError(f"unknown similarity distillation mode {mode!r}; choose 'mse' or 'kl'")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        self.mode = mode
        self.temperature = temperature

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """(B, Ds) student, (B, Dt) teacher descriptors, B >= 2 -> scalar loss."""
        _check_batch(student, teacher)
        if student.shape[0] < 2:
            raise ValueError("similarity distillation needs at least 2 images per batch")
        s = F.normalize(student.float(), dim=1)
        t = F.normalize(_target(teacher), dim=1)
        off_diagonal = ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
        sim_s = (s @ s.T)[off_diagonal].view(s.shape[0], -1)  # (B, B - 1)
        sim_t = (t @ t.T)[off_diagonal].view(t.shape[0], -1)
        if self.mode == "mse":
            return F.mse_loss(sim_s, sim_t)
        log_p_s = F.log_softmax(sim_s / self.temperature, dim=1)
        log_p_t = F.log_softmax(sim_t / self.temperature, dim=1)
        return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


class ProjectionDistillation(nn.Module):
    """Project the student's descriptor to the teacher's size and penalise 1 - cosine to the teacher's.

    The projection (``proj``: Linear student_dim -> teacher_dim, no bias) is trained with the student
    and is not part of the deployed model. Cosine rather than MSE: on L2-normalised vectors
    ||a - b||^2 = 2 (1 - cos), so the two differ by a factor of 2 only.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim, bias=False)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """(B, student_dim) student, (B, teacher_dim) teacher descriptors -> scalar loss in [0, 2]."""
        _check_batch(student, teacher)
        if student.shape[1] != self.proj.in_features or teacher.shape[1] != self.proj.out_features:
            raise ValueError(f"projection distillation was built for {self.proj.in_features}-d student and "
                             f"{self.proj.out_features}-d teacher descriptors, got {student.shape[1]} and "
                             f"{teacher.shape[1]}")
        projected = F.normalize(self.proj(student.float()), dim=1)
        return (1 - (projected * F.normalize(_target(teacher), dim=1)).sum(dim=1)).mean()


DISTILL_LOSSES = {"similarity": SimilarityDistillation, "projection": ProjectionDistillation}


def build_distill_loss(name: str, student_dim: int, teacher_dim: int, **config) -> nn.Module:
    """The distillation loss registered as ``name``; the descriptor sizes go to the losses that take them."""
    try:
        cls = DISTILL_LOSSES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown distillation loss {name!r}; choose one of {sorted(DISTILL_LOSSES)}") from None
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        settings = sorted(set(accepted) - {"student_dim", "teacher_dim"})
        raise ConfigError(f"distillation loss {name!r} does not take {unknown}; its settings are {settings}")
    dims = {k: v for k, v in {"student_dim": student_dim, "teacher_dim": teacher_dim}.items() if k in accepted}
    return cls(**dims, **config)


# None: whatever autocast context the caller runs in (e.g. Lightning's mixed precision)
PRECISIONS = {None: None, "32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16,
              "fp16": torch.float16}


class Teacher:
    """A frozen, trained network (VPRNet) that embeds images for distillation.

    Not an ``nn.Module`` on purpose: stored as a plain attribute of the student (``self.teacher =
    Teacher(...)``), ``nn.Module.__setattr__`` does not register it, so it is absent from the
    student's ``state_dict``, ``parameters()`` (hence optimizer), DDP wrapping, ``.to()`` and
    ``.train()``. It follows its input instead: the first call with images on another device moves
    the teacher there (or move it up front with ``teacher.to(device)``, e.g. in ``on_fit_start``). Its
    model is put in eval mode with ``requires_grad=False`` and is forced back to eval at every call.

    Images of another size than the teacher's evaluation size (``model.preprocessing``, which its checkpoint
    records, else its ``image_size``; e.g. a student trained at a lower resolution) are resized to it
    (bilinear, antialiased) first: MixVPR only takes the size it was built for. A teacher evaluated with each
    image at its own resolution (a release such as CosPlace or MegaLoc: preprocessing resize 'none') takes
    the student's images as they are. Images come normalised with ImageNet's mean/std (the student's); a
    teacher with another normalisation (NetVLAD's pixels in 0..255) gets them renormalised to its own.

    precision: ``"bf16"`` or ``"fp16"``/``"16"``: autocast dtype of the teacher's forward (bf16 suits
    CPUs and recent GPUs, fp16 GPUs); ``"32"``: float32 even inside the caller's autocast; ``None``:
    the caller's context (float32, or e.g. Lightning's ``16-mixed`` autocast). Descriptors come back
    in float32.
    """

    def __init__(self, model: nn.Module, precision: Optional[str] = None):
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown teacher precision {precision!r}; choose one of "
                             f"{sorted(p for p in PRECISIONS if p is not None)} or None")
        self.model = model.eval().requires_grad_(False)
        self.dtype = PRECISIONS[precision]
        self.descriptor_dim = getattr(model, "descriptor_dim", None)
        # the size the teacher is evaluated at (its checkpoint's record; None: each image's own), else the size
        # it was built for
        record = getattr(model, "preprocessing", None)
        image_size = record.fixed_size if record is not None else getattr(model, "image_size", None)
        self.image_size = tuple(image_size) if image_size is not None else None
        # (scale, shift) taking ImageNet-normalised images to the teacher's normalisation; None: the same
        self.renormalise = None
        if record is not None and (record.mean, record.std) != (IMAGENET_MEAN, IMAGENET_STD):
            scale = torch.tensor(IMAGENET_STD) / torch.tensor(record.std)
            shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(record.mean)) / torch.tensor(record.std)
            self.renormalise = scale.view(3, 1, 1), shift.view(3, 1, 1)

    @classmethod
    def from_checkpoint(cls, path: str | Path, precision: Optional[str] = None, **model_kwargs) -> "Teacher":
        """Teacher from one of our Lightning ``.ckpt`` (architecture from its saved hyper-parameters), a
        published release (``release:<name>``, e.g. ``release:megaloc_dinov2_8448``: its network, weights and
        evaluation preprocessing) or a bare state_dict (architecture from ``model_kwargs``: backbone_arch,
        layers_to_crop, agg_arch, agg_config, image_size, backbone_config; a release's file under its published
        name needs none). ``model_kwargs`` override saved hyper-parameters. A teacher that cannot be built or
        loaded raises the loader's error, saying it is the teacher's."""
        name = release_in(path)
        if name is not None and model_kwargs:
            raise ConfigError(f"distillation teacher {path} is a release, with its own architecture: leave "
                              f"distillation.teacher_config out")
        try:
            model = load_release(name) if name is not None else load_model(path, **model_kwargs)
        except UserError as err:
            raise type(err)(
                f"distillation teacher {path}: {err}\nThe teacher's architecture goes in distillation.teacher_config "
                f"(backbone_arch, backbone_config, layers_to_crop, agg_arch, agg_config, image_size).") from None
        return cls(model, precision)

    @property
    def device(self) -> torch.device:
        """Device of the teacher's weights."""
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "Teacher":
        """Move the teacher's weights to ``device`` (in place); returns self."""
        self.model.to(device)
        return self

    def __call__(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, descriptor_dim) float32 descriptors on the images' device, no
        autograd graph."""
        if self.model.training:
            self.model.eval()
        if images.device != self.device:
            self.model.to(images.device)
        images = images.to(next(self.model.parameters()).dtype)
        if self.renormalise is not None:
            scale, shift = (t.to(images.device, images.dtype) for t in self.renormalise)
            images = images * scale + shift
        if self.image_size is not None and tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False,
                                   antialias=True)
        if self.dtype is None:
            precision = nullcontext()
        elif self.dtype == torch.float32:
            precision = torch.autocast(device_type=images.device.type, enabled=False)
        else:
            precision = torch.autocast(device_type=images.device.type, dtype=self.dtype)
        with torch.inference_mode(), precision:
            descriptors = self.model(images)
        # a normal tensor: inference tensors cannot enter the student's autograd graph
        return descriptors.float().clone()
