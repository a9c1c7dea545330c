"""``sgt_advect``: our Storm-Graph Transformer, a residual over persistence by learned advection.

Data flow for a batch (H = W, a multiple of 16; h = H / 4):

1. :class:`MultiModalEncoder`: each modality's T_in frames -> (B, hidden_dim, h, h).
2. :class:`StormCellDetector` on the latest VIL frame -> up to ``max_cells`` cells per sample;
   node features = encoder features around each peak (+ the peak's VIL / 255), projected.
3. :class:`StormGNN`: kNN graph of the batch's cells, GATConv layers with edge features.
4. :class:`GraphToGrid`: node features splatted back onto the h x h grid and added to it.
5. :class:`SpatioTemporalTransformer` over patches of the grid.
6. :class:`PhysicsDecoder`: full resolution, T_out frames by learned advection.

Loss: ``MSE + lambda_physics * physics + lambda_extreme * extreme`` on the 0..1 scale, where
``physics`` = advection residual + velocity smoothness and ``extreme`` = mean over all pixels
of the squared error on pixels whose target is >= ``extreme_threshold`` (181), so those
pixels weigh ``1 + lambda_extreme`` in total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS
from stormfusion.models.base import VIL_SCALE, last_vil
from stormfusion.models.sgt.advect.decoder import DecoderOutput, PhysicsDecoder
from stormfusion.models.sgt.advect.encoder import MultiModalEncoder
from stormfusion.models.sgt.branch import BranchOptions, StormGraphBranch, StormGraphModel
from stormfusion.models.sgt.detector import StormCellDetector, StormCells
from stormfusion.models.sgt.graph import CellGraph, StormGNN
from stormfusion.models.sgt.splat import GraphToGrid
from stormfusion.models.sgt.transformer import SpatioTemporalTransformer


@dataclass
class SGTOutput:
    """Everything one pass computes (the forecast and what the loss and figures need)."""

    forecast: Tensor  # (B, T_out, H, W) VIL 0..255, unclamped
    decoded: DecoderOutput
    last: Tensor  # (B, 1, H, W) last observed VIL / 255
    cells: StormCells | None
    graph: CellGraph | None


@MODELS.register("sgt_advect")
class AdvectStormGraphTransformer(StormGraphModel):
    """Our Storm-Graph Transformer (the advection decoder; docs/models.md compares it with
    the seed's ``sgt``).

    Args:
        input_frames, output_frames: T_in and T_out (seed: 12 and 6).
        modalities: modalities read; must include ``vil`` (the detector and the decoder use it).
        hidden_dim: feature channels of the grid, the nodes and the tokens (seed: 128).
        encoder_channels: channels of each modality encoder at 1/4 resolution.
        gnn_layers: GATConv layers (seed: 3).
        transformer_layers: transformer encoder layers (seed: 4).
        heads: attention heads of the GAT and the transformer (seed: 8).
        patch_size: transformer patch side on the 1/4-resolution grid.
        knn: neighbours per node in the cell graph.
        max_cells: cap on storm cells per sample.
        cell_threshold: VIL (0..255) a storm-cell peak must reach.
        min_separation: minimum distance between peaks, in input pixels.
        splat_sigma: Gaussian splatting width in domain units.
        lambda_physics, lambda_extreme: loss weights (seed: 0.1, 2.0).
        extreme_threshold: VIL (0..255) from which the extreme term weights a pixel.
        use_gnn, use_transformer, use_physics, use_extreme: ablation switches.
        dropout: dropout in the GAT and the transformer.
    """

    def __init__(
        self,
        input_frames: int = 12,
        output_frames: int = 6,
        modalities: Sequence[str] = STUDY_MODALITIES,
        hidden_dim: int = 128,
        encoder_channels: int = 64,
        gnn_layers: int = 3,
        transformer_layers: int = 4,
        heads: int = 8,
        patch_size: int = 4,
        knn: int = 8,
        max_cells: int = 64,
        cell_threshold: float = 74.0,
        min_separation: int = 8,
        splat_sigma: float = 0.03,
        lambda_physics: float = 0.1,
        lambda_extreme: float = 2.0,
        extreme_threshold: float = 181.0,
        use_gnn: bool = True,
        use_transformer: bool = True,
        use_physics: bool = True,
        use_extreme: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, input_frames, output_frames)
        if "vil" not in self.modalities:
            raise StormFusionError("sgt_advect needs 'vil' in its modalities")
        self.hidden_dim = hidden_dim
        self.patch_size = patch_size
        self.lambda_physics = float(lambda_physics)
        self.lambda_extreme = float(lambda_extreme)
        self.extreme_threshold = float(extreme_threshold)
        self.use_gnn = use_gnn
        self.use_transformer = use_transformer
        self.use_physics = use_physics
        self.use_extreme = use_extreme

        self.encoder = MultiModalEncoder(
            self.modalities, input_frames, encoder_channels, hidden_dim
        )
        if min_separation < 1:
            raise StormFusionError(f"sgt_advect min_separation={min_separation} must be >= 1")
        self.detector = StormCellDetector(cell_threshold, 2 * min_separation + 1, max_cells)
        self.graph: StormGraphBranch | None = None
        if use_gnn:
            gnn = StormGNN(hidden_dim, gnn_layers, heads, dropout)
            self.graph = StormGraphBranch(
                hidden_dim, self.detector, gnn, GraphToGrid(splat_sigma), BranchOptions(knn=knn)
            )
        self.transformer: SpatioTemporalTransformer | None = None
        if use_transformer:
            self.transformer = SpatioTemporalTransformer(
                hidden_dim, transformer_layers, heads, patch_size, dropout=dropout
            )
        self.decoder = PhysicsDecoder(hidden_dim, output_frames, use_physics)

    # -- the pass ------------------------------------------------------------------------

    def run(self, inputs: dict[str, Tensor], mask: Tensor) -> SGTOutput:
        """One full pass; :meth:`forward` returns its ``forecast``."""
        inputs = self.prepare_inputs(inputs, mask)  # VIL grid, normalised
        _, h, w = self.check_inputs(inputs, mask)
        if h % 16 or w % 16:
            raise StormFusionError(f"sgt_advect needs H and W divisible by 16; got {h} x {w}")
        if (h // 4) % self.patch_size or (w // 4) % self.patch_size:
            raise StormFusionError(
                f"sgt_advect: the {h // 4} x {w // 4} feature grid is not a multiple of "
                f"patch_size={self.patch_size}"
            )
        vil_last = last_vil(inputs)  # (B, 1, H, W) 0..255
        grid = self.encode(inputs, mask)
        cells: StormCells | None = None
        graph: CellGraph | None = None
        if self.graph is not None:
            grid, cells, graph = self.graph(grid, vil_last)
        if self.transformer is not None:
            grid = self.transformer(grid)
        last = vil_last / VIL_SCALE
        decoded = self.decoder(grid, last)
        return SGTOutput(decoded.frames * VIL_SCALE, decoded, last, cells, graph)

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        return self.run(inputs, mask).forecast

    def training_loss(
        self, inputs: dict[str, Tensor], mask: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """``MSE + lambda_physics * physics + lambda_extreme * extreme`` (0..1 scale).

        Terms logged: loss, mse, extreme, physics_advection, physics_smoothness (the unused
        terms of an ablation are still logged, not added).
        """
        out = self.run(inputs, mask)
        error2 = (out.decoded.frames - target / VIL_SCALE) ** 2
        mse = error2.mean()
        extreme = (error2 * (target >= self.extreme_threshold)).mean()
        advection, smoothness = PhysicsDecoder.physics_terms(out.decoded, out.last)
        loss = mse
        if self.use_physics:
            loss = loss + self.lambda_physics * (advection + smoothness)
        if self.use_extreme:
            loss = loss + self.lambda_extreme * extreme
        terms = {
            "loss": float(loss.detach()),
            "mse": float(mse.detach()),
            "extreme": float(extreme.detach()),
            "physics_advection": float(advection.detach()),
            "physics_smoothness": float(smoothness.detach()),
        }
        return loss, terms

    def encode(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        return self.encoder([inputs[m] for m in self.modalities], self.modality_mask(mask))


__all__ = ["AdvectStormGraphTransformer", "SGTOutput"]
