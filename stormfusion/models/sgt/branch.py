"""The storm-graph branch (cells -> graph -> GAT -> splat) and the figures' ``explain`` calls,
shared by ``sgt`` (the seed's) and ``sgt_advect`` (ours); their differences are arguments."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stormfusion.errors import StormFusionError
from stormfusion.models.base import VIL_SCALE, ForecastModel, last_vil
from stormfusion.models.sgt.detector import StormCellDetector, StormCells, gather_node_features
from stormfusion.models.sgt.graph import CellGraph, EdgeFeatures, StormGNN, knn_graph
from stormfusion.models.sgt.splat import GraphToGrid
from stormfusion.models.sgt.transformer import SpatioTemporalTransformer


@dataclass(frozen=True)
class BranchOptions:
    """How the branch reads cells and writes back (ours: the defaults; the seed's: see
    ``sgt``'s model).

    Attributes:
        knn: neighbours per node.
        detect_on_grid: detect on the latest VIL frame max-pooled to the feature grid (the
            seed's) rather than on the input grid (ours).
        neighbourhood: side of the feature mean around each peak (1 = the peak's vector).
        intensity_feature: append the peak's VIL / 255 to the node features (ours).
        edge_features: ``"polar"`` in domain units (ours) or ``"offset"`` in feature pixels.
        project_splat: splat features and density through a 1x1 conv (ours) or add the splat
            to the grid as it is (the seed's).
    """

    knn: int = 8
    detect_on_grid: bool = False
    neighbourhood: int = 3
    intensity_feature: bool = True
    edge_features: EdgeFeatures = "polar"
    project_splat: bool = True


def detect_cells(
    detector: StormCellDetector, vil_last: Tensor, grid: tuple[int, int] | None
) -> tuple[StormCells, int, int]:
    """Cells of ``vil_last`` (B, 1, H, W) VIL 0..255, on the input grid (``grid`` None) or on
    the frame max-pooled to ``grid`` (h, w); returns them and the detection grid's size."""
    if grid is not None:
        pooled = F.adaptive_max_pool2d(vil_last, grid)
        return detector(pooled[:, 0]), grid[0], grid[1]
    h, w = vil_last.shape[-2:]
    return detector(vil_last[:, 0]), h, w


class StormGraphBranch(nn.Module):
    """Cells of the latest VIL frame, their kNN graph through a GAT stack, splatted back.

    Shapes: ``grid`` (B, C, h, w) features, ``vil_last`` (B, 1, H, W) VIL 0..255 ->
    (B, C, h, w) features with the graph's contribution added, the cells and the graph.
    Cell positions are (x, y) in [0, 1] whichever grid they were detected on.
    """

    def __init__(
        self,
        hidden_dim: int,
        detector: StormCellDetector,
        gnn: StormGNN,
        splat: GraphToGrid,
        options: BranchOptions,
    ) -> None:
        super().__init__()
        if options.knn < 1:
            raise StormFusionError(f"sgt knn={options.knn} must be >= 1")
        self.detector = detector
        self.options = options
        extra = 1 if options.intensity_feature else 0
        self.node_in = nn.Linear(hidden_dim + extra, hidden_dim)
        self.gnn = gnn
        self.splat = splat
        self.splat_out: nn.Conv2d | None = None
        if options.project_splat:
            self.splat_out = nn.Conv2d(hidden_dim + 1, hidden_dim, 1)

    def forward(self, grid: Tensor, vil_last: Tensor) -> tuple[Tensor, StormCells, CellGraph]:
        b, c, fh, fw = grid.shape
        on_grid = (fh, fw) if self.options.detect_on_grid else None
        cells, h, w = detect_cells(self.detector, vil_last, on_grid)
        slots = cells.valid.shape[1]
        nodes = gather_node_features(grid, cells, h, w, self.options.neighbourhood)  # (B, K, C)
        if self.options.intensity_feature:
            nodes = torch.cat([nodes, (cells.intensity / VIL_SCALE)[..., None]], dim=-1)
        scale = (float(fw), float(fh)) if self.options.edge_features == "offset" else (1.0, 1.0)
        graph = knn_graph(
            cells.positions, cells.valid, self.options.knn, self.options.edge_features, scale
        )
        x = self.node_in(nodes.reshape(b * slots, -1)[graph.node_slot])
        x = self.gnn(x, graph)
        padded = x.new_zeros(b * slots, c).index_copy(0, graph.node_slot, x).reshape(b, slots, c)
        splat, density = self.splat(padded, cells.positions, cells.valid, fh, fw)
        if self.splat_out is not None:
            splat = self.splat_out(torch.cat([splat, density], dim=1))
        return grid + splat, cells, graph


class StormGraphModel(ForecastModel):
    """What both SGTs share for figures: :meth:`explain` (cells and GNN attention) and
    :meth:`explain_attention` (the transformer's last-layer attention).

    Subclasses set ``graph`` (a :class:`StormGraphBranch` or None), ``detector``,
    ``transformer`` (or None) and implement :meth:`encode` (the fused grid features) and
    :meth:`features_before_transformer`.
    """

    graph: StormGraphBranch | None
    detector: StormCellDetector
    transformer: SpatioTemporalTransformer | None
    #: detect cells on the feature grid (H/4, W/4) rather than the input grid.
    detect_on_grid: bool = False

    def cells(self, vil_last: Tensor) -> StormCells:
        """The storm cells of ``vil_last`` (B, 1, H, W) as the model detects them."""
        h, w = vil_last.shape[-2:]
        return detect_cells(
            self.detector, vil_last, (h // 4, w // 4) if self.detect_on_grid else None
        )[0]

    @abc.abstractmethod
    def encode(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """Fused encoder features (B, C, h, w) of prepared inputs (``prepare_inputs``)."""

    def features_before_transformer(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """Grid features (B, C, h, w) as the transformer receives them (prepared inputs)."""
        grid = self.encode(inputs, mask)
        if self.graph is not None:
            grid, _, _ = self.graph(grid, last_vil(inputs))
        return grid

    @torch.no_grad()
    def explain(self, inputs: dict[str, Tensor], mask: Tensor) -> list[dict[str, Tensor]]:
        """The storm-cell graph of each sample, for figures (CPU tensors).

        One dict per sample: ``positions`` (N, 2) float (x, y) in [0, 1], y along rows
        (northwards); ``edge_index`` (2, E) long (source, target), node numbers local to the
        sample, the kNN edges without GATConv's self loops; ``attention`` (E,) float, last GAT
        layer, mean over heads (each node's incoming attention, self loop included, sums to
        1); ``intensity`` (N,) float VIL of each cell's peak. Without the GNN (ablation) the
        cells are still detected, with no edges.
        """
        inputs = self.prepare_inputs(inputs, mask)  # VIL grid, normalised
        was_training = self.training
        self.eval()  # batch norm must not update its running statistics here
        try:
            return self._explain(inputs, mask)
        finally:
            self.train(was_training)

    def _explain(self, inputs: dict[str, Tensor], mask: Tensor) -> list[dict[str, Tensor]]:
        vil_last = last_vil(inputs)
        if self.graph is not None:
            _, cells, graph = self.graph(self.encode(inputs, mask), vil_last)
            num_nodes = int(graph.node_slot.numel())
            attention = self.graph.gnn.edge_attention(graph.edge_index, num_nodes)
            edge_index, edge_batch = graph.edge_index, graph.batch[graph.edge_index[1]]
        else:
            cells = self.cells(vil_last)
            edge_index = torch.zeros(2, 0, dtype=torch.long, device=vil_last.device)
            attention = vil_last.new_zeros(0)
            edge_batch = torch.zeros(0, dtype=torch.long, device=vil_last.device)
        counts = cells.counts
        first_node = torch.cumsum(counts, 0) - counts
        result = []
        for b in range(vil_last.shape[0]):
            n = int(counts[b])
            selected = edge_batch == b
            result.append(
                {
                    "positions": cells.positions[b, :n].cpu(),
                    "edge_index": (edge_index[:, selected] - first_node[b]).cpu(),
                    "attention": attention[selected].cpu(),
                    "intensity": cells.intensity[b, :n].cpu(),
                }
            )
        return result

    @torch.no_grad()
    def explain_attention(self, inputs: dict[str, Tensor], mask: Tensor) -> list[Tensor]:
        """The transformer's last-layer attention from the storm cells' patches (CPU).

        One (h_p, w_p) map per sample, on the patch grid over the domain (row 0 = the first
        image row): the mean, over the patches holding a detected cell (every patch when
        there is none), of their attention rows (mean over heads); each map sums to 1. Raises
        a :class:`StormFusionError` without a transformer (ablation).
        """
        if self.transformer is None:
            raise StormFusionError(f"{type(self).__name__} has no transformer (use_transformer)")
        inputs = self.prepare_inputs(inputs, mask)  # VIL grid, normalised
        was_training = self.training
        self.eval()
        try:
            grid = self.features_before_transformer(inputs, mask)
            weights, hp, wp = self.transformer.last_attention(grid)  # (B, N, N)
            cells = self.cells(last_vil(inputs))
        finally:
            self.train(was_training)
        rows = (cells.positions[..., 1] * hp).long().clamp(0, hp - 1)
        cols = (cells.positions[..., 0] * wp).long().clamp(0, wp - 1)
        maps = []
        for b in range(weights.shape[0]):
            patches = torch.unique(rows[b][cells.valid[b]] * wp + cols[b][cells.valid[b]])
            selected = weights[b, patches] if patches.numel() else weights[b]
            maps.append(selected.mean(dim=0).reshape(hp, wp).cpu())
        return maps
