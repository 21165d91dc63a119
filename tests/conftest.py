"""Shared fixtures: tiny synthetic data sets in the real on-disk formats, generated once per session.

Tests run torch on one intra-op thread (here and, through OMP_NUM_THREADS, in the processes they
start): as fast on tiny images, and two processes with two threads each on two cores (the DDP test)
would otherwise slow each other down many times over.
"""
import os

os.environ["OMP_NUM_THREADS"] = "1"
# the tests' own callbacks (tests/tiny_cli.py) are given as class_path values: allowed explicitly, as a user would
os.environ["VPR_ALLOWED_MODULES"] = "tiny_cli"

import pytest  # noqa: E402
import torch  # noqa: E402

from dataloaders.synthetic import generate_synthetic  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict:
    """{'gsv_cities': root, 'pitts': root, 'msls': root} of the tiny synthetic data sets."""
    return generate_synthetic(tmp_path_factory.mktemp("synthetic"), scale="tiny", seed=0)


@pytest.fixture
def tiny_dinov2(monkeypatch) -> dict:
    """Registers test-only DINOv2 sizes (width 32, depth 2, 2 heads; the real 37 x 37 position grid):
    ``dinov2_vitt14`` (MLP) and ``dinov2_vitt14_swiglu`` (ViT-g's SwiGLU), for the constructors and for
    the command line (``--model.backbone_arch``, whose choices come from VPRModel's signature). Returns
    {name: size}."""
    from functools import partial
    from typing import Literal

    from models.backbones import BACKBONES
    from models.backbones.dinov2 import DINOV2_ARCHS, DINOv2, ViTSize
    from models.vpr_model import VPRModel

    sizes = {"dinov2_vitt14": ViTSize(32, 2, 2), "dinov2_vitt14_swiglu": ViTSize(32, 2, 2, "swiglu")}
    for name, size in sizes.items():
        monkeypatch.setitem(DINOV2_ARCHS, name, size)
        monkeypatch.setitem(BACKBONES, name, partial(DINOv2, name))
    monkeypatch.setitem(VPRModel.__init__.__annotations__, "backbone_arch", Literal[tuple(BACKBONES)])
    return sizes


@pytest.fixture(scope="module")
def gem_weights(tmp_path_factory):
    """A bare state_dict file of ResNet18 + GeM (any image size fits it)."""
    from models import VPRModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gem") / "gem.pth"
    torch.save(VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32)).state_dict(), path)
    return path
