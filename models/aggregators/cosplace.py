"""CosPlace's head (Berton et al., CVPR 2022), which EigenPlaces (Berton et al., ICCV 2023) shares.

As the authors build it (gmberton/CosPlace at 33ce8d0, ``cosplace_model/cosplace_network.py``
``GeoLocalizationNet.aggregation``; gmberton/EigenPlaces at a2969f7, ``eigenplaces_network.py``, the same
``nn.Sequential``)::

    0 L2Norm over channels   1 GeM (p learned, starts at 3; eps 1e-6)   2 Flatten
    3 Linear(C, out_dim)     4 L2Norm

so the pooled vector goes into the linear layer as GeM gives it, not normalised. Layout: ``gem.p`` (1,),
``fc.weight`` (out_dim, C), ``fc.bias`` (out_dim,); the releases' ``aggregation.1.p`` and
``aggregation.3.*`` are renamed by ``models.layouts.cosplace``. (Before this module followed the release,
it L2-normalised the pooled vector before the linear layer: weights trained with that load, but give other
descriptors now.) Training here uses the metric losses of this project, not CosPlace's CosFace classifier
over SF-XL groups.
"""
import torch.nn.functional as F
from torch import Tensor, nn

from .gem import GeM


class CosPlace(nn.Module):
    """(B, in_channels, H, W) map -> (B, out_dim) L2-normalised descriptor."""

    def __init__(self, in_channels: int = 1024, out_dim: int = 512):
        super().__init__()
        self.gem = GeM()
        self.fc = nn.Linear(in_channels, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_dim)."""
        x = self.gem(F.normalize(x, p=2, dim=1))
        return F.normalize(self.fc(x), p=2, dim=-1)
