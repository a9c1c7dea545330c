"""``sgt``: the seed study's Storm-Graph Transformer, as its authors built it.

Data flow for a batch (H = W, a multiple of 4 * ``patch_size``; h = H / 4, 96 at 384):

1. :class:`SeedEncoder`: per modality a ResNet-style encoder (7x7 stem, four basic blocks)
   -> 128 channels at h x h; concatenated and fused by a 1x1 conv.
2. Cells: local maxima of the latest VIL frame max-pooled to h x h over an 8 x 8 window,
   at least ``cell_threshold``, the strongest 50, one peak per plateau (our tie-breaking; the
   seed's detector gave one node per pixel of a flat top); a dummy node at the centre when
   there is none. Node feature: the fused vector at the peak, Linear(C, C).
3. kNN graph (k = 8, edge attributes distance, dy, dx in feature pixels), an edge MLP
   3 -> 128 -> ReLU -> 4, three GATConv(C, C / 4, heads 4, edge_dim 4, dropout 0.1) as
   ``x = LayerNorm(x + Dropout(GAT(x)))``.
4. Gaussian splat of the nodes onto the grid (learnable width, initially 4 feature pixels,
   each kernel summing to 1), added to the fused features.
5. Transformer over 8 x 8 patches (12 x 12 tokens at 384), 4 pre-norm blocks of 8 heads,
   final LayerNorm, the token map upsampled bilinearly and added to the grid.
6. :class:`SeedDecoder`: pooled GRU over the leads, shared transposed-conv upsampler,
   Sigmoid (absolute VIL / 255), then the global translation and decay ("physics").

Loss: :func:`stormfusion.models.sgt.seed.loss.seed_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS
from stormfusion.models.base import VIL_SCALE, last_vil
from stormfusion.models.sgt.branch import BranchOptions, StormGraphBranch, StormGraphModel
from stormfusion.models.sgt.detector import StormCellDetector
from stormfusion.models.sgt.graph import StormGNN
from stormfusion.models.sgt.seed.decoder import SeedDecoder
from stormfusion.models.sgt.seed.encoder import SeedEncoder
from stormfusion.models.sgt.seed.loss import SeedLossWeights, seed_loss
from stormfusion.models.sgt.splat import GraphToGrid
from stormfusion.models.sgt.transformer import SpatioTemporalTransformer


def _seed_gnn(
    hidden_dim: int, layers: int, heads: int, edge_hidden: int, dropout: float
) -> StormGNN:
    """The seed's GAT stack: edge MLP of ``edge_hidden``, no activation between layers,
    dropout on attention and on the residual."""
    return StormGNN(
        hidden_dim,
        layers,
        heads,
        dropout,
        edge_encoder=edge_hidden,
        activation=False,
        residual_dropout=dropout,
    )


def _seed_graph_branch(
    hidden_dim: int, detector: StormCellDetector, gnn: StormGNN, splat_sigma: float, knn: int
) -> StormGraphBranch:
    """The seed's graph branch: cells detected on the feature grid, node features read at the
    peak pixel, [distance, dy, dx] edges, and a learnable normalised Gaussian splat whose
    output is added to the grid features without a projection."""
    splat = GraphToGrid(splat_sigma, units="pixels", learnable=True, normalize=True)
    options = BranchOptions(
        knn=knn,
        detect_on_grid=True,
        neighbourhood=1,
        intensity_feature=False,
        edge_features="offset",
        project_splat=False,
    )
    return StormGraphBranch(hidden_dim, detector, gnn, splat, options)


@MODELS.register("sgt")
class SeedStormGraphTransformer(StormGraphModel):
    """The seed's SGT (5,252,297 parameters at its defaults; docs/models.md).

    Args:
        input_frames, output_frames: T_in and T_out (seed: 12 and 6).
        modalities: modalities read; must include ``vil``.
        hidden_dim: channels of the grid, the nodes and the tokens (seed: 128).
        encoder_width: channels of each encoder's stem and first stage (seed: 64; the second
            stage has twice as many).
        gnn_layers, gnn_heads: GATConv layers and heads (seed: 3 and 4).
        transformer_layers, transformer_heads: blocks and heads (seed: 4 and 8).
        patch_size: transformer patch side on the feature grid (seed: 8).
        knn: neighbours per node (seed: 8).
        max_cells: cap on cells per sample (seed: 50).
        cell_threshold: VIL (0..255) a cell's peak must reach.
        peak_window: side of the square a peak dominates, in feature pixels (seed: 8).
        splat_sigma: initial splat width in feature pixels (seed: 4).
        edge_hidden: hidden width of the edge MLP (seed: 128).
        dropout: GAT attention and residual dropout, transformer dropout (seed: 0.1).
        lambda_extreme, lambda_physics: loss weights (seed: 2.0, 0.1).
        extreme_threshold: VIL (0..255) strictly above which a pixel is extreme (seed: 181).
        use_gnn, use_transformer, use_physics, use_extreme: the seed's ablations (no cells,
            GNN or splat; no transformer; no translation/decay scalars and no physics loss
            term; no extreme term).
    """

    detect_on_grid = True

    def __init__(
        self,
        input_frames: int = 12,
        output_frames: int = 6,
        modalities: Sequence[str] = STUDY_MODALITIES,
        hidden_dim: int = 128,
        encoder_width: int = 64,
        gnn_layers: int = 3,
        gnn_heads: int = 4,
        transformer_layers: int = 4,
        transformer_heads: int = 8,
        patch_size: int = 8,
        knn: int = 8,
        max_cells: int = 50,
        cell_threshold: float = 74.0,
        peak_window: int = 8,
        splat_sigma: float = 4.0,
        edge_hidden: int = 128,
        dropout: float = 0.1,
        lambda_extreme: float = 2.0,
        lambda_physics: float = 0.1,
        extreme_threshold: float = 181.0,
        use_gnn: bool = True,
        use_transformer: bool = True,
        use_physics: bool = True,
        use_extreme: bool = True,
    ) -> None:
        super().__init__(modalities, input_frames, output_frames)
        if "vil" not in self.modalities:
            raise StormFusionError("sgt needs 'vil' in its modalities")
        self.hidden_dim = hidden_dim
        self.patch_size = patch_size
        self.loss_weights = SeedLossWeights(
            lambda_extreme=float(lambda_extreme),
            lambda_physics=float(lambda_physics),
            extreme_threshold=float(extreme_threshold),
            use_extreme=use_extreme,
            use_physics=use_physics,
        )
        self.encoder = SeedEncoder(self.modalities, input_frames, encoder_width, hidden_dim)
        self.detector = StormCellDetector(
            cell_threshold, peak_window, max_cells, centre_fallback=True
        )
        self.graph: StormGraphBranch | None = None
        if use_gnn:
            gnn = _seed_gnn(hidden_dim, gnn_layers, gnn_heads, edge_hidden, dropout)
            self.graph = _seed_graph_branch(hidden_dim, self.detector, gnn, splat_sigma, knn)
        self.transformer: SpatioTemporalTransformer | None = None
        if use_transformer:
            self.transformer = SpatioTemporalTransformer(
                hidden_dim, transformer_layers, transformer_heads, patch_size, dropout=dropout,
                unembed="upsample",
            )  # fmt: skip
        self.decoder = SeedDecoder(hidden_dim, output_frames, physics=use_physics)

    def encode(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        return self.encoder([inputs[m] for m in self.modalities], self.modality_mask(mask))

    def frames(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """The forecast on the VIL / 255 scale, (B, T_out, H, W)."""
        inputs = self.prepare_inputs(inputs, mask)  # VIL grid, normalised
        h, w = inputs["vil"].shape[-2:]
        step = 4 * self.patch_size if self.transformer is not None else 4
        if h % step or w % step:
            raise StormFusionError(
                f"sgt needs H and W divisible by {step} (4 x patch_size={self.patch_size}); "
                f"got {h} x {w}"
            )
        grid = self.encode(inputs, mask)
        if self.graph is not None:
            grid, _, _ = self.graph(grid, last_vil(inputs))
        if self.transformer is not None:
            grid = self.transformer(grid)
        return self.decoder(grid)

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        return self.frames(inputs, mask) * VIL_SCALE

    def training_loss(
        self, inputs: dict[str, Tensor], mask: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """The seed's loss (:func:`seed_loss`); terms logged: loss, mse, extreme,
        conservation, gradient (switched-off terms logged, not added)."""
        loss, terms = seed_loss(self.frames(inputs, mask), target, self.loss_weights)
        logged = {name: float(value.detach()) for name, value in terms.items()}
        return loss, {"loss": float(loss.detach()), **logged}


__all__ = ["SeedStormGraphTransformer"]
