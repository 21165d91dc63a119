"""Deterministic pseudo-random weights and inputs for comparing our models with the authors' code.

Values depend only on (key name, shape, seed), not on module order, so a state_dict built from a layout
written in a test and one read off the authors' model get the same numbers. The reference outputs in
tests/data were computed by running the authors' code (outside this repository) on these weights.
"""
import math
import zlib

import torch
from torch import Tensor


def seeded_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0,
                      gain: dict[str, float] | None = None) -> dict[str, Tensor]:
    """{key: tensor} for a {key: shape} layout: matrices and kernels ~ N(0, 1/fan_in), BatchNorm running
    variances in [0.5, 1.5), counters 0, everything else (biases, norms, embeddings, scales) ~ N(0, 0.25);
    the keys in ``gain`` multiplied by their factor."""
    out = {}
    for key, shape in shapes.items():
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("weight") and len(shape) >= 2:
            out[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            out[key] = 0.5 * torch.randn(shape, generator=g)
        out[key] = out[key] * (gain or {}).get(key, 1)
    return out


def seeded_image(height: int, width: int, batch: int = 1, seed: int = 0) -> Tensor:
    """(batch, 3, height, width) standard-normal input."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def shapes_of(state_dict: dict) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a state_dict."""
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def cache_as_published(state_dict: dict, weights, torch_home, monkeypatch) -> None:
    """Put ``state_dict`` in torch.hub's cache under ``torch_home`` as torchvision's ``weights`` (a WeightsEnum
    member) for this test: saved under a name carrying its own SHA-256 prefix, torchvision's convention, and
    ``weights.url`` pointed at that name (the loader checks a cached file against the prefix in its name)."""
    import hashlib
    import io
    from pathlib import Path

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    data = buffer.getvalue()
    stem = weights.url.rsplit("/", 1)[-1].rsplit("-", 1)[0]
    name = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    folder = Path(torch_home) / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    monkeypatch.setattr(weights.value, "url", weights.url.rsplit("/", 1)[0] + "/" + name)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))


def seeded_matconvnet(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """``seeded_state_dict`` for a MatConvNet layout (``release_layouts.netvlad_matconvnet_layout``): kernels
    (H, W, in, out) and matrices (in, out) ~ N(0, 2 / fan_in) (fan_in: all but the last dimension), biases
    ~ N(0, 0.01^2), the other matrices (NetVLAD's assignment and centres) ~ N(0, 0.25), the average image
    rising from 90 to 130 over its entries (pixels in 0..255)."""
    gain = {}
    for key, shape in layout.items():
        if key.endswith("weights.0") and len(shape) in (2, 4) and not key.startswith("net.layers.30."):
            gain[key] = 2 * math.sqrt(2 / math.prod(shape[:-1]))  # seeded_state_dict's 0.5 * N(0, 1) -> He
        elif key.endswith("weights.1") and len(shape) == 1:
            gain[key] = 0.02
    out = seeded_state_dict(layout, seed, gain)
    average = "net.meta.normalization.averageImage"
    if average in out:
        out[average] = torch.linspace(90, 130, math.prod(layout[average])).reshape(layout[average])
    return out
