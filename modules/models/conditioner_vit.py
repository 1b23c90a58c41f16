"""Vision-transformer conditioner: a design image -> the VAE latent code."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.models.latent_heads import LatentHeads
from modules.models.latent_layout import LatentPrediction


class VisionTransformerConditioner(nn.Module):
    """[B, in_channels, H, W] -> LatentPrediction(main [B, latent_dim_main], hier [B, levels, latent_dim_hier]).

    Non-overlapping patch_size x patch_size patches are embedded by a strided conv,
    a cls token is prepended, position embeddings are added, `depth` pre-norm
    transformer layers run, and the heads read the normalised cls token. The
    position table is learned for image_size x image_size and bicubically resized
    for other sizes, so a model trained at one size still accepts another.
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim_main: int, latent_dim_hier: int,
                 num_hier_levels: int, patch_size: int = 8, embed_dim: int = 64, depth: int = 4,
                 num_heads: int = 4, dropout_rate: float = 0.1):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        if not 0 < patch_size <= image_size:
            raise ValueError(f"patch_size must be in 1..image_size ({image_size}), got {patch_size}")
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.patch_embedding = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_position = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_positions = nn.Parameter(torch.zeros(1, embed_dim, self.grid_size, self.grid_size))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_position, std=0.02)
        nn.init.trunc_normal_(self.patch_positions, std=0.02)
        self.embedding_dropout = nn.Dropout(dropout_rate)
        # A plain list of layers rather than nn.TransformerEncoder: the latter's
        # nested-tensor fast path does not apply to norm_first layers and only warns.
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model=embed_dim, nhead=num_heads, dim_feedforward=4 * embed_dim,
                                       dropout=dropout_rate, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.heads = LatentHeads(embed_dim, latent_dim_main, latent_dim_hier, num_hier_levels)

    def position_embeddings(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """[1, grid_height * grid_width, embed_dim], resized from the construction grid when it differs."""
        table = self.patch_positions
        if (grid_height, grid_width) != (self.grid_size, self.grid_size):
            table = F.interpolate(table, size=(grid_height, grid_width), mode="bicubic", align_corners=False)
        return table.flatten(2).transpose(1, 2)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, H, W] -> [B, embed_dim] (the normalised cls token)."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape [B, {self.in_channels}, H, W], got {list(images.shape)}")
        if images.shape[2] < self.patch_size or images.shape[3] < self.patch_size:
            raise ValueError(f"images must be at least {self.patch_size}x{self.patch_size} (patch_size), "
                             f"got {images.shape[2]}x{images.shape[3]}")
        patches = self.patch_embedding(images)  # [B, D, H/p, W/p]
        grid_height, grid_width = patches.shape[2], patches.shape[3]
        tokens = patches.flatten(2).transpose(1, 2) + self.position_embeddings(grid_height, grid_width)
        cls = (self.cls_token + self.cls_position).expand(images.shape[0], -1, -1)
        hidden = self.embedding_dropout(torch.cat([cls, tokens], dim=1))
        for layer in self.layers:
            hidden = layer(hidden)
        return self.norm(hidden[:, 0])

    def forward(self, images: torch.Tensor) -> LatentPrediction:
        return self.heads(self.features(images))
