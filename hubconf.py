"""torch.hub entry points: ``torch.hub.load('<owner>/<repo>', 'mixvpr', backbone='resnet50',
descriptors_dimension=4096, pretrained=True)``, likewise ``'boq'``, ``'salad'`` and ``'lightweight_mixvpr'``, and
the field's baselines with their authors' keyword names: ``'cosplace'`` and ``'eigenplaces'`` (``backbone='ResNet50',
fc_output_dim=2048``), ``'netvlad'`` (``descriptors_dimension=4096``), ``'megaloc'`` and ``'clique_mining'``.

Each returns a ``VPRNet`` in eval mode: (B, 3, H, W) images, resized and normalised as ``net.preprocessing``
says (the release's published test size, resize policy and mean/std; ``net.mean``/``net.std``), -> (B, D)
L2-normalised descriptors. ``pretrained=True`` loads the published weights (downloaded once into torch.hub's cache
and verified by SHA-256 before every use; offline, the error names the file to put there). torch and torchvision
are needed; the Lightweight-MixVPR EfficientNet also needs timm, MegaLoc's file safetensors and NetVLAD's MATLAB
file scipy. The releases and their addresses: ``models/releases.py``.
"""
dependencies = ["torch", "torchvision"]


def _release(family: str, backbone: str, descriptors_dimension: int | None, pretrained: bool):
    from models.releases import load_release, release_name

    return load_release(release_name(family, backbone, descriptors_dimension), pretrained)


def mixvpr(backbone: str = "resnet50", descriptors_dimension: int = 4096, pretrained: bool = True):
    """MixVPR (Ali-bey et al., WACV 2023): ResNet50 cropped after layer3 + MixVPR, 320 x 320 images;
    descriptors_dimension 4096, 512 or 128 (the authors' three releases)."""
    return _release("mixvpr", backbone, descriptors_dimension, pretrained)


def boq(backbone: str = "dinov2", descriptors_dimension: int | None = None, pretrained: bool = True):
    """BoQ, Bag-of-Queries (Ali-bey et al., CVPR 2024), the authors' two releases: backbone ``dinov2``
    (DINOv2 ViT-B/14, 12288-d, 322 x 322 images) or ``resnet50`` (cropped after layer3, 16384-d,
    384 x 384 images). The network returns the descriptor only; its cross-attention maps come from
    ``net.aggregator.attention_maps(net.backbone(images))``."""
    return _release("boq", backbone, descriptors_dimension, pretrained)


def salad(backbone: str = "dinov2", descriptors_dimension: int | None = None, pretrained: bool = True):
    """DINOv2 SALAD (Izquierdo & Civera, CVPR 2024), the authors' release: DINOv2 ViT-B/14 (final norm and
    class token) + SALAD 64 clusters x 128 + 256-d token = 8448-d, 322 x 322 images."""
    return _release("salad", backbone, descriptors_dimension, pretrained)


def lightweight_mixvpr(backbone: str = "efficientnet_b0", descriptors_dimension: int | None = None,
                       pretrained: bool = True):
    """The Lightweight-MixVPR project's releases, MixVPR on 320 x 320 images: backbone ``efficientnet_b0``
    (timm's whole EfficientNet-B0 trunk, 128-d; needs timm: ``pip install timm``), ``mobilenet_v2``
    (torchvision's MobileNetV2 with its 512-channel head upsampled to 20 x 20, 1024-d) or ``resnet18``
    (its distilled ResNet18 student, cropped after layer3, 512-d)."""
    return _release("lightweight", backbone, descriptors_dimension, pretrained)


def cosplace(backbone: str = "ResNet50", fc_output_dim: int = 2048, pretrained: bool = True):
    """CosPlace (Berton et al., CVPR 2022), trained on SF-XL, as ``torch.hub.load('gmberton/cosplace',
    'get_trained_model', backbone, fc_output_dim)`` builds it: the whole torchvision trunk (VGG16 up to conv5_3,
    or ResNet18/50/101/152 with layer4) + L2-norm, GeM, linear, L2-norm. Backbones and sizes: VGG16 64-512,
    ResNet18 32-512, ResNet50/101/152 32-2048. Evaluated with each image at its own resolution, ImageNet mean/std."""
    return _release("cosplace", backbone, fc_output_dim, pretrained)


def eigenplaces(backbone: str = "ResNet50", fc_output_dim: int = 2048, pretrained: bool = True):
    """EigenPlaces (Berton et al., ICCV 2023), trained on SF-XL: CosPlace's network (``cosplace``), released for
    VGG16 512, ResNet18 256/512, ResNet50 and ResNet101 128-2048. Evaluated with each image at its own resolution."""
    return _release("eigenplaces", backbone, fc_output_dim, pretrained)


def netvlad(backbone: str = "VGG16", descriptors_dimension: int = 4096, pretrained: bool = True):
    """NetVLAD (Arandjelovic et al., CVPR 2016), the authors' MATLAB release trained on Pitts30k, as
    VPR-methods-evaluation loads it: VGG16 up to conv5_3 + NetVLAD, 64 clusters, 32768-d, or 4096-d after its PCA
    whitening (``descriptors_dimension``, 4096 or 32768; one file for both). It takes ImageNet-normalised images,
    as every network here, and feeds its VGG16 pixels in 0..255 less the release's average colour, as the port does;
    each image at its own resolution."""
    return _release("netvlad", backbone, descriptors_dimension, pretrained)


def megaloc(pretrained: bool = True):
    """MegaLoc (Berton & Masone, CVPR Workshops 2025), as ``torch.hub.load('gmberton/MegaLoc', 'get_trained_model')``
    builds it: DINOv2 ViT-B/14 (final norm, class token) + SALAD 64 x 256 + 256, a linear layer to 8448 and an
    L2-norm; an image whose sides are not multiples of 14 is resized to the nearest ones inside the forward pass,
    as the authors' forward does. The weights are the Hugging Face file (gberton/MegaLoc model.safetensors); the
    first GitHub release is ``models.releases.load_release('megaloc_dinov2_8448_github')``."""
    return _release("megaloc", "dinov2", 8448, pretrained)


def clique_mining(pretrained: bool = True):
    """CliqueMining (Izquierdo & Civera, ECCV 2024), the authors' release (serizba/cliquemining README, Google
    Drive): DINOv2 SALAD's network (``salad``) trained with clique mining; 8448-d, 322 x 322 images."""
    return _release("clique_mining", "dinov2", 8448, pretrained)
