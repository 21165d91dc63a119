"""NetVLAD: soft-assignment residual aggregation (Arandjelovic et al., CVPR 2016), with its PCA whitening.

For local features x_n (C channels, L2-normalised over channels first) and K clusters with centres c_k::

    a_kn = softmax_k(w_k . x_n [+ b_k])          the assignment, a 1 x 1 convolution
    V_k  = sum_n a_kn (x_n - c_k)                each cluster's residual sum (C values)
    V_k <- V_k / ||V_k||                         intra-normalisation
    v    = flatten(V), channel-major             index = channel * K + cluster (MATLAB's 1 x K x D array
                                                 reshaped column-major, layerVLAD.m)
    v   <- v / ||v||
    [v  <- W v + b, v <- v / ||v||]              PCA whitening to ``whitening_dim`` (addPCA.m), optional

The authors' released models (Relja/netvlad at 652dbe7, ``vd16_*_conv5_3_vlad_preL2_intra_white``) are the
``vlad`` variant: an assignment without bias (``assignment_bias=False``), initialised from the normalised
centres (``addLayers.m``). ``assignment_bias=True`` (the default, as this module always had) is the paper's
formulation with a bias, initialised from the centres with ``alpha`` as in ``vladv2``.

Layout: ``conv.weight`` (K, C, 1, 1), ``conv.bias`` (K,) with ``assignment_bias``, ``centroids`` (K, C),
``whitening.weight`` (whitening_dim, K * C) and ``whitening.bias`` with ``whitening_dim``. The MATLAB release
maps onto it through ``models.layouts.netvlad``. (Before the flattening followed the release, it was
cluster-major: the same descriptors up to a permutation, so the same distances and recall.)
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NetVLAD(nn.Module):
    """(B, in_channels, H, W) map -> (B, num_clusters * in_channels) L2-normalised descriptor, or
    (B, whitening_dim) after the PCA whitening.

    Centroids start random; ``init_from_features`` sets them (and the assignment conv) from
    sampled local features the way the paper initialises them, with k-means centres.
    """

    def __init__(self, in_channels: int = 1024, num_clusters: int = 64, alpha: float = 100.0,
                 assignment_bias: bool = True, whitening_dim: Optional[int] = None):
        super().__init__()
        self.alpha = alpha
        self.assignment_bias = assignment_bias
        self.conv = nn.Conv2d(in_channels, num_clusters, kernel_size=1, bias=assignment_bias)
        self.centroids = nn.Parameter(torch.rand(num_clusters, in_channels))
        self.whitening = nn.Linear(num_clusters * in_channels, whitening_dim) if whitening_dim else None
        self.out_dim = whitening_dim or num_clusters * in_channels
        self._init_assignment()

    def _init_assignment(self) -> None:
        c = F.normalize(self.centroids.data, dim=1)
        if self.assignment_bias:  # vladv2
            self.conv.weight.data.copy_((2.0 * self.alpha * c)[..., None, None])
            self.conv.bias.data.copy_(-self.alpha * c.norm(dim=1))
        else:                     # vlad: the normalised centres, scaled
            self.conv.weight.data.copy_((self.alpha * c)[..., None, None])

    @torch.no_grad()
    def init_from_features(self, centroids: Tensor) -> None:
        """Set the (num_clusters, in_channels) centroids, e.g. k-means centres of local features."""
        self.centroids.data.copy_(centroids)
        self._init_assignment()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, K * C), or (B, whitening_dim)."""
        x = F.normalize(x, p=2, dim=1)
        soft = F.softmax(self.conv(x).flatten(2), dim=1)                 # (B, K, N)
        feats = x.flatten(2)                                             # (B, C, N)
        # sum_n a_kn (x_n - c_k) = (A X^T)_k - (sum_n a_kn) c_k
        vlad = torch.bmm(soft, feats.transpose(1, 2)) - soft.sum(-1, keepdim=True) * self.centroids
        vlad = F.normalize(vlad, p=2, dim=2)                             # intra-normalisation
        vlad = F.normalize(vlad.transpose(1, 2).flatten(1), p=2, dim=-1)  # channel-major
        if self.whitening is not None:
            vlad = F.normalize(self.whitening(vlad), p=2, dim=-1)
        return vlad
