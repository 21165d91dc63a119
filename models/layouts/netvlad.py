"""NetVLAD's MATLAB release (Relja/netvlad; the ``*_struct.mat`` files hloc and VPR-methods-evaluation load)
-> our keys.

The file is a MatConvNet ``simplenn`` network saved as plain structs (``net.layers{i}.weights``,
``net.meta.normalization.averageImage``), read here with ``scipy.io.loadmat(squeeze_me=True,
struct_as_record=False)`` (no code runs) into ``net.layers.<i>.weights.<j>`` and
``net.meta.normalization.averageImage`` tensors (``read_matconvnet``), squeezed as loadmat gives them.
The layers, as the port VPR-methods-evaluation uses reads them (gmberton/VPR-methods-evaluation at adbb6e2,
``vpr_models/netvlad.py``, from hloc) and as Relja/netvlad at 652dbe7 builds them (``loadNet.m`` cut at
conv5_3, ``addLayers.m``, ``addPCA.m``)::

    0 .. 28   VGG16 up to conv5_3 (ReLUs and pools between, weightless); convolutions at torchvision's
              indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28: weights.0 (3, 3, in, out) (MatConvNet's
              H x W x in x out), weights.1 (out,)
    29        preL2 (no weights)
    30        vlad:core (layerVLAD): weights.0 (D, K) assignment, no bias; weights.1 (D, K) the negated
              centres (the layer adds it: x - c)
    31, 32    intra-normalisation, L2 (no weights)
    33        WPCA (a 1 x 1 convolution): weights.0 (D * K, 4096), weights.1 (4096,) = -U^T mu; 34 final L2
    net.meta.normalization.averageImage   the mean pixel (0..255) subtracted from the input; its first
              pixel is used (``computeRepresentation.m``: averageImage(1,1,:); hloc: ``averageImage[0, 0]``)

Ours: ``backbone.model.features.<i>.*`` and ``backbone.average_rgb`` (``models.backbones.vgg``,
subtract_average), ``aggregator.conv.weight`` (K, D, 1, 1), ``aggregator.centroids`` (K, D),
``aggregator.whitening.*`` (``models.aggregators.netvlad``). The 32768-d model is the same file without the
whitening: ``OPTIONAL`` entries are left out for a network that lacks them.
"""
import re
from pathlib import Path

import numpy as np
import torch

PREFIX = "net.layers."
AVERAGE = "net.meta.normalization.averageImage"
CONVOLUTIONS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VLAD, WHITENING = 30, 33
# entries of the release a network of its family may lack: the 32768-d NetVLAD is the release without its WPCA
OPTIONAL = ("aggregator.whitening.",)
_KEY = re.compile(r"net\.layers\.(\d+)\.weights\.(\d)")


def read_matconvnet(path: str | Path) -> dict:
    """The weights of a MatConvNet ``simplenn`` .mat file as ``net.layers.<i>.weights.<j>`` float32 tensors
    (squeezed, as loadmat gives them) and its ``net.meta.normalization.averageImage``."""
    from scipy.io import loadmat

    net = loadmat(str(path), squeeze_me=True, struct_as_record=False)["net"]
    out = {}
    for i, layer in enumerate(np.atleast_1d(net.layers)):
        weights = getattr(layer, "weights", None)
        if weights is None:
            continue
        weights = list(weights) if isinstance(weights, np.ndarray) and weights.dtype == object else [weights]
        for j, w in enumerate(weights):
            if np.size(w):
                out[f"{PREFIX}{i}.weights.{j}"] = torch.from_numpy(np.array(w, dtype=np.float32))
    out[AVERAGE] = torch.from_numpy(np.array(net.meta.normalization.averageImage, dtype=np.float32))
    return out


def is_layout(state_dict: dict) -> bool:
    """True when ``state_dict`` is a NetVLAD release read by ``read_matconvnet``."""
    return f"{PREFIX}{VLAD}.weights.0" in state_dict and AVERAGE in state_dict


def _shape(value) -> tuple:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _map(value, fn, shape_fn):
    """``fn`` of a tensor, or ``shape_fn`` of a layout's shape tuple (tests describe releases by shapes)."""
    return fn(value) if isinstance(value, torch.Tensor) else shape_fn(_shape(value))


def to_ours(state_dict: dict) -> dict:
    """Our keys and tensor layouts (convolutions to out x in x H x W, the centres un-negated and transposed,
    the whitening to a linear layer); ValueError naming the entries that are not a NetVLAD release's."""
    out, unplaced = {}, []
    for key, value in state_dict.items():
        match = _KEY.fullmatch(key)
        layer, j = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        if key == AVERAGE:  # the first pixel of the stored average image
            out["backbone.average_rgb"] = _map(value, lambda v: v.reshape(-1, 3)[0].clone(), lambda s: (3,))
        elif layer in CONVOLUTIONS and j == 0:
            out[f"backbone.model.features.{layer}.weight"] = _map(
                value, lambda v: v.permute(3, 2, 0, 1).contiguous(), lambda s: (s[3], s[2], s[0], s[1]))
        elif layer in CONVOLUTIONS and j == 1:
            out[f"backbone.model.features.{layer}.bias"] = value
        elif layer == VLAD and j == 0:
            out["aggregator.conv.weight"] = _map(value, lambda v: v.t().contiguous()[..., None, None],
                                                 lambda s: (s[1], s[0], 1, 1))
        elif layer == VLAD and j == 1:
            out["aggregator.centroids"] = _map(value, lambda v: (-v).t().contiguous(), lambda s: (s[1], s[0]))
        elif layer == WHITENING and j == 0:
            out["aggregator.whitening.weight"] = _map(value, lambda v: v.reshape(-1, v.shape[-1]).t().contiguous(),
                                                      lambda s: (s[-1], int(np.prod(s[:-1]))))
        elif layer == WHITENING and j == 1:
            out["aggregator.whitening.bias"] = _map(value, lambda v: v.reshape(-1).clone(),
                                                    lambda s: (int(np.prod(s)),))
        else:
            unplaced.append(key)
    if unplaced:
        shown = ", ".join(unplaced[:8]) + (f" ... ({len(unplaced)} in all)" if len(unplaced) > 8 else "")
        raise ValueError(f"not a NetVLAD release's entry: {shown}. Expected the weights of layers {CONVOLUTIONS} "
                         f"(VGG16), {VLAD} (vlad:core), {WHITENING} (WPCA) and {AVERAGE}")
    return out
