"""The storm-cell graph: a k-nearest-neighbour graph and a stack of graph-attention layers.

Shared by ``sgt`` (the seed's) and ``sgt_advect`` (ours); their differences are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from stormfusion.errors import StormFusionError


@dataclass
class CellGraph:
    """The cells of a whole batch as one graph (a PyG-style batch: node offsets per sample).

    Attributes:
        edge_index: (2, E) long, (source, target) over the N valid nodes of the batch;
            source is a neighbour of target (messages flow source -> target).
        edge_attr: (E, 3) float, from target to source: ``"polar"`` distance and direction
            (cos, sin), ``"offset"`` distance, dy and dx (see :func:`knn_graph`).
        batch: (N,) long, sample of each node.
        node_slot: (N,) long, flat index ``b * K + k`` of each node in the padded (B, K) layout.
    """

    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    node_slot: Tensor


EdgeFeatures = Literal["polar", "offset"]


def knn_graph(
    positions: Tensor,
    valid: Tensor,
    k: int,
    edge_features: EdgeFeatures = "polar",
    scale: tuple[float, float] = (1.0, 1.0),
) -> CellGraph:
    """k-nearest-neighbour graph of each sample's valid cells (torch.cdist + topk).

    ``positions`` (B, K, 2) as (x, y), ``valid`` (B, K) bool. A node gets edges from its
    ``min(k, n - 1)`` nearest valid neighbours of the same sample; no self loops. Positions
    are first multiplied by ``scale`` (x, y): (1, 1) keeps domain units, (w, h) gives the
    pixels of a w x h grid. Edge features from target to source: ``"polar"`` = distance,
    cos and sin of the direction (ours); ``"offset"`` = distance, dy, dx (the seed's).
    """
    positions = positions * positions.new_tensor(scale)
    b, slots, _ = positions.shape
    device = positions.device
    flat_valid = valid.reshape(-1)
    global_id = torch.cumsum(flat_valid.long(), 0) - 1  # node number of each valid slot
    node_slot = torch.nonzero(flat_valid, as_tuple=False).reshape(-1)
    batch = torch.div(node_slot, slots, rounding_mode="floor")
    kk = min(k, slots - 1)
    if kk < 1:
        empty = torch.zeros(2, 0, dtype=torch.long, device=device)
        return CellGraph(empty, positions.new_zeros(0, 3), batch, node_slot)
    distance = torch.cdist(positions, positions)
    eye = torch.eye(slots, dtype=torch.bool, device=device)[None]
    blocked = eye | ~valid[:, None, :] | ~valid[:, :, None]
    distance = distance.masked_fill(blocked, torch.inf)
    nearest, neighbour = distance.topk(kk, dim=2, largest=False)  # (B, K, kk)
    keep = torch.isfinite(nearest)
    offsets = (torch.arange(b, device=device) * slots)[:, None, None]
    target_slot = (offsets + torch.arange(slots, device=device)[None, :, None]).expand_as(neighbour)
    source_slot = offsets + neighbour
    source = global_id[source_slot[keep]]
    target = global_id[target_slot[keep]]
    flat_pos = positions.reshape(-1, 2)
    delta = flat_pos[source_slot[keep]] - flat_pos[target_slot[keep]]
    dist = delta.norm(dim=1, keepdim=True)
    if edge_features == "offset":
        edge_attr = torch.cat([dist, delta[:, 1:2], delta[:, 0:1]], dim=1)
    else:
        edge_attr = torch.cat([dist, delta / dist.clamp_min(1e-6)], dim=1)
    return CellGraph(torch.stack([source, target]), edge_attr, batch, node_slot)


class StormGNN(nn.Module):
    """Stack of GATConv layers (torch-geometric) with edge features, residual + LayerNorm.

    Each layer: ``x = LayerNorm(x + Dropout(act(GATConv(x, edge_index, e))))`` with ``heads``
    heads of ``hidden_dim / heads`` channels, concatenated, and attention dropout
    ``dropout``; GATConv adds self loops (their edge features are the mean of the node's
    incoming edges). ``e`` is the raw edge features (``edge_encoder=0``) or their encoding by
    an MLP ``3 -> edge_encoder -> ReLU -> heads`` (one scalar per head, the seed's).
    ``act`` is ELU (ours) or the identity (the seed's, ``activation=False``). The last
    layer's attention is kept in :attr:`attention` for figures.

    Shapes: ``x`` (N, hidden_dim), edge features (E, 3) -> (N, hidden_dim).
    """

    def __init__(
        self,
        hidden_dim: int,
        layers: int = 3,
        heads: int = 8,
        dropout: float = 0.0,
        edge_encoder: int = 0,
        activation: bool = True,
        residual_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden_dim % heads:
            raise StormFusionError(
                f"sgt hidden_dim={hidden_dim} must be divisible by the GAT heads={heads}"
            )
        if layers < 1:
            raise StormFusionError(f"sgt gnn_layers={layers} must be >= 1")
        self.edge_encoder: nn.Module = nn.Identity()
        edge_dim = 3
        if edge_encoder > 0:
            self.edge_encoder = nn.Sequential(
                nn.Linear(3, edge_encoder), nn.ReLU(), nn.Linear(edge_encoder, heads)
            )
            edge_dim = heads
        self.convs = nn.ModuleList(
            GATConv(
                hidden_dim, hidden_dim // heads, heads=heads, edge_dim=edge_dim, dropout=dropout
            )
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(layers))
        self.activation = activation
        self.residual_dropout = nn.Dropout(residual_dropout)
        #: (edge_index with self loops (2, E'), attention (E', heads)) of the last layer.
        self.attention: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor, graph: CellGraph) -> Tensor:
        last = len(self.convs) - 1
        edge_attr = self.edge_encoder(graph.edge_attr)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if i == last:
                out, (edges, alpha) = conv(
                    x, graph.edge_index, edge_attr, return_attention_weights=True
                )
                self.attention = (edges.detach(), alpha.detach())
            else:
                out = conv(x, graph.edge_index, edge_attr)
            if self.activation:
                out = nn.functional.elu(out)
            x = norm(x + self.residual_dropout(out))
        return x

    def edge_attention(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """Last-layer attention of the given (self-loop-free) edges, mean over heads: (E,)."""
        if self.attention is None:
            raise RuntimeError("StormGNN.edge_attention called before a forward pass")
        edges, alpha = self.attention
        if edge_index.shape[1] == 0:
            return alpha.new_zeros(0)
        keys = edges[0] * num_nodes + edges[1]
        order = torch.argsort(keys)
        wanted = edge_index[0] * num_nodes + edge_index[1]
        found = order[torch.searchsorted(keys[order], wanted)]
        return alpha[found].mean(dim=1)
