"""torch.hub entry points: ``torch.hub.load('<owner>/<repo>', 'mixvpr', backbone='resnet50',
descriptors_dimension=4096, pretrained=True)``.

Each returns a ``VPRNet`` in eval mode: (B, 3, H, W) images, normalised with ``net.mean``/``net.std`` and
resized to ``net.image_size``, -> (B, D) L2-normalised descriptors. ``pretrained=True`` loads the
published weights (downloaded once into torch.hub's cache; offline, the error names the file to put
there). Only torch and torchvision are needed.
"""
dependencies = ["torch", "torchvision"]


def mixvpr(backbone: str = "resnet50", descriptors_dimension: int = 4096, pretrained: bool = True):
    """MixVPR (Ali-bey et al., WACV 2023): ResNet50 cropped after layer3 + MixVPR, 320 x 320 images;
    descriptors_dimension 4096, 512 or 128 (the authors' three releases)."""
    from models.releases import RELEASES, load_release

    name = f"mixvpr_{backbone}_{descriptors_dimension}"
    if name not in RELEASES:
        choices = sorted(n for n in RELEASES if n.startswith("mixvpr_"))
        raise ValueError(f"no MixVPR release for backbone={backbone!r}, descriptors_dimension={descriptors_dimension}; "
                         f"the releases are {choices}")
    return load_release(name, pretrained)
