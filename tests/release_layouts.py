"""Key -> shape layouts of the released weights, written down from the projects' published structure
(DINOv2's block structure, SALAD's and BoQ's module lists, torchvision's ResNet), independently of our
model code, so that tests can check our state_dicts against them."""
import functools

import torch
import torchvision


def dinov2_layout(embed_dim: int, depth: int, swiglu: bool = False, grid: int = 37) -> dict:
    """The official DINOv2 hub model (patch 14, layer scale, MLP ratio 4, no registers, unchunked blocks)."""
    d = embed_dim
    layout = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + grid * grid, d), "mask_token": (1, d),
              "patch_embed.proj.weight": (d, 3, 14, 14), "patch_embed.proj.bias": (d,),
              "norm.weight": (d,), "norm.bias": (d,)}
    hidden = (int(4 * d * 2 / 3) + 7) // 8 * 8  # SwiGLU width: 2/3 of 4D, rounded up to a multiple of 8
    for i in range(depth):
        b = f"blocks.{i}."
        layout |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                   b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
                   b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,), b + "ls1.gamma": (d,),
                   b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "ls2.gamma": (d,)}
        if swiglu:
            layout |= {b + "mlp.w12.weight": (2 * hidden, d), b + "mlp.w12.bias": (2 * hidden,),
                       b + "mlp.w3.weight": (d, hidden), b + "mlp.w3.bias": (d,)}
        else:
            layout |= {b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
                       b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,)}
    return layout


def salad_layout(channels: int, clusters: int, cluster_dim: int, token_dim: int) -> dict:
    """SALAD's aggregator: three two-layer heads of hidden width 512 and the dustbin score."""
    return {"token_features.0.weight": (512, channels), "token_features.0.bias": (512,),
            "token_features.2.weight": (token_dim, 512), "token_features.2.bias": (token_dim,),
            "cluster_features.0.weight": (512, channels, 1, 1), "cluster_features.0.bias": (512,),
            "cluster_features.3.weight": (cluster_dim, 512, 1, 1), "cluster_features.3.bias": (cluster_dim,),
            "score.0.weight": (512, channels, 1, 1), "score.0.bias": (512,),
            "score.3.weight": (clusters, 512, 1, 1), "score.3.bias": (clusters,),
            "dust_bin": ()}


def _attention(prefix: str, d: int) -> dict:
    return {prefix + "in_proj_weight": (3 * d, d), prefix + "in_proj_bias": (3 * d,),
            prefix + "out_proj.weight": (d, d), prefix + "out_proj.bias": (d,)}


def boq_layout(in_channels: int, dim: int, queries: int, layers: int, row_dim: int) -> dict:
    """BoQ's aggregator: 3x3 projection, L blocks (encoder layer, queries, self- and cross-attention), fc."""
    d = dim
    layout = {"proj_c.weight": (d, in_channels, 3, 3), "proj_c.bias": (d,),
              "norm_input.weight": (d,), "norm_input.bias": (d,),
              "fc.weight": (row_dim, layers * queries), "fc.bias": (row_dim,)}
    for i in range(layers):
        b = f"boqs.{i}."
        layout |= _attention(b + "encoder.self_attn.", d)
        layout |= {b + "encoder.linear1.weight": (4 * d, d), b + "encoder.linear1.bias": (4 * d,),
                   b + "encoder.linear2.weight": (d, 4 * d), b + "encoder.linear2.bias": (d,),
                   b + "encoder.norm1.weight": (d,), b + "encoder.norm1.bias": (d,),
                   b + "encoder.norm2.weight": (d,), b + "encoder.norm2.bias": (d,),
                   b + "queries": (1, queries, d),
                   b + "norm_q.weight": (d,), b + "norm_q.bias": (d,),
                   b + "norm_out.weight": (d,), b + "norm_out.bias": (d,)}
        layout |= _attention(b + "self_attn.", d) | _attention(b + "cross_attn.", d)
    return layout


def resnet_sequential_layout(arch: str) -> dict:
    """BoQ's ResNet: torchvision's conv1, bn1, (relu, maxpool), layer1..layer3 as nn.Sequential items 0..6."""
    positions = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6}
    with torch.device("meta"):
        trunk = getattr(torchvision.models, arch)(weights=None).state_dict()
    return {f"net.{positions[k.split('.')[0]]}.{k.split('.', 1)[1]}": tuple(v.shape)
            for k, v in trunk.items() if k.split(".")[0] in positions}


def prefixed(prefix: str, layout: dict) -> dict:
    """``layout`` with ``prefix`` before every key."""
    return {prefix + k: v for k, v in layout.items()}


def release(backbone: dict, aggregator: dict) -> dict:
    """A release's layout: the (prefixed) backbone entries and the aggregator's under ``aggregator.``."""
    return backbone | prefixed("aggregator.", aggregator)


def resnet_layout(arch: str) -> dict:
    """torchvision's ResNet cropped after layer3 (conv1, bn1, layer1..layer3) under its own names."""
    with torch.device("meta"):
        trunk = getattr(torchvision.models, arch)(weights=None).state_dict()
    return {k: tuple(v.shape) for k, v in trunk.items() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3")}


def mixvpr_layout(in_channels: int, positions: int, out_channels: int, depth: int, rows: int) -> dict:
    """MixVPR's aggregator (the authors' names): depth mixers over the H*W positions, then the channel and
    row projections."""
    layout = {"channel_proj.weight": (out_channels, in_channels), "channel_proj.bias": (out_channels,),
              "row_proj.weight": (rows, positions), "row_proj.bias": (rows,)}
    for i in range(depth):
        p = f"mix.{i}.mix."
        layout |= {p + "0.weight": (positions,), p + "0.bias": (positions,), p + "1.weight": (positions, positions),
                   p + "1.bias": (positions,), p + "3.weight": (positions, positions), p + "3.bias": (positions,)}
    return layout


@functools.cache
def _geolocalization_trunk(backbone: str) -> tuple:
    with torch.device("meta"):
        tv = getattr(torchvision.models, backbone.lower())(weights=None)
    children = list(tv.children())[:-2] if backbone.startswith("ResNet") else list(tv.features.children())[:-2]
    return tuple((f"backbone.{i}.{k}", tuple(v.shape)) for i, child in enumerate(children)
                 for k, v in child.state_dict().items())


def geolocalization_layout(backbone: str, dim: int) -> dict:
    """CosPlace's and EigenPlaces' GeoLocalizationNet (their *_network.py): ``backbone`` an nn.Sequential of
    torchvision's ResNet children without avgpool and fc, or of vgg16.features without its last two modules;
    ``aggregation`` (L2Norm, GeM, Flatten, Linear, L2Norm)."""
    channels = 512 if backbone in ("VGG16", "ResNet18") else 2048
    return dict(_geolocalization_trunk(backbone)) | {"aggregation.1.p": (1,), "aggregation.3.weight": (dim, channels),
                                                     "aggregation.3.bias": (dim,)}


# VGG16 up to conv5_3 as MatConvNet lists it (imagenet-vgg-verydeep-16 cut at conv5_3, Relja/netvlad loadNet.m)
_VGG16_MATCONVNET = ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1", "conv2_2", "relu2_2",
                     "pool2", "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3", "conv4_1",
                     "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4", "conv5_1", "relu5_1", "conv5_2",
                     "relu5_2", "conv5_3"]
_VGG16_CHANNELS = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}


def netvlad_matconvnet_layout(clusters: int = 64, whitening_dim: int | None = 4096) -> dict:
    """NetVLAD's MATLAB release (Relja/netvlad addLayers.m, addPCA.m; ``vd16_*_conv5_3_vlad_preL2_intra_white``)
    as ``models.layouts.netvlad.read_matconvnet`` reads it: ``net.layers.<i>.weights.<j>`` with loadmat's
    squeezed shapes, and the average image (stored here as a 2 x 2 x 3 image)."""
    layout, previous = {}, 3
    for i, name in enumerate(_VGG16_MATCONVNET):
        if name.startswith("conv"):
            out = _VGG16_CHANNELS[name[4]]
            layout |= {f"net.layers.{i}.weights.0": (3, 3, previous, out), f"net.layers.{i}.weights.1": (out,)}
            previous = out
    layout |= {"net.layers.30.weights.0": (512, clusters), "net.layers.30.weights.1": (512, clusters)}
    if whitening_dim:
        layout |= {"net.layers.33.weights.0": (512 * clusters, whitening_dim),
                   "net.layers.33.weights.1": (whitening_dim,)}
    return layout | {"net.meta.normalization.averageImage": (2, 2, 3)}


def netvlad_layer_names(whitening: bool = True) -> list[str]:
    """The names of the release's layers, in order (VGG16 to conv5_3, then addLayers.m's and addPCA.m's)."""
    added = ["preL2", "vlad:core", "vlad:intranorm", "postL2"] + (["WPCA", "finalL2"] if whitening else [])
    return _VGG16_MATCONVNET + added


def write_netvlad_mat(path, tensors: dict) -> None:
    """Save ``tensors`` (in ``netvlad_matconvnet_layout``) as MatConvNet's ``net`` struct: ``layers`` a cell of
    structs (name, type, weights: a cell of arrays), ``meta.normalization.averageImage``."""
    import numpy as np
    from scipy.io import savemat

    names = netvlad_layer_names("net.layers.33.weights.0" in tensors)
    layers = np.empty(len(names), dtype=object)
    for i, name in enumerate(names):
        keys = (f"net.layers.{i}.weights.0", f"net.layers.{i}.weights.1")
        cell = np.empty(sum(k in tensors for k in keys), dtype=object)
        for j, key in enumerate(k for k in keys if k in tensors):
            cell[j] = tensors[key].numpy()
        kind = "conv" if name.startswith(("conv", "WPCA")) else name[:4] if name[:4] in ("relu", "pool") else "custom"
        layers[i] = {"name": name, "type": kind, "weights": cell}
    average = tensors["net.meta.normalization.averageImage"].numpy()
    savemat(str(path), {"net": {"layers": layers, "meta": {"normalization": {"averageImage": average}}}})


def megaloc_layout(embed_dim: int, depth: int, clusters: int, cluster_dim: int, token_dim: int, out_dim: int,
                   first_release: bool = False) -> dict:
    """MegaLoc (gmberton/MegaLoc megaloc_model.py): ``backbone`` its own ViT with DINOv2's names but no mask token
    (the Hugging Face safetensors), or the official DINOv2 hub model as ``backbone.model`` (the first, GitHub,
    release); ``aggregator.agg`` SALAD, ``aggregator.linear``."""
    vit = dinov2_layout(embed_dim, depth)
    if first_release:
        backbone = prefixed("backbone.model.", vit)
    else:
        backbone = prefixed("backbone.", {k: v for k, v in vit.items() if k != "mask_token"})
    head = prefixed("agg.", salad_layout(embed_dim, clusters, cluster_dim, token_dim)) | {
        "linear.weight": (out_dim, clusters * cluster_dim + token_dim), "linear.bias": (out_dim,)}
    return release(backbone, head)
