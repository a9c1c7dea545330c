"""The seed's SGT (``sgt``): its parameter counts by part (the published facts of the seed's
code), its loss on hand-built cases, its "physics" scalars, and the shared parts' seed
settings (even peak window, dummy node, offset edges, edge MLP, normalised splat,
upsampled tokens, attention maps)."""

from __future__ import annotations

import math

import pytest
import torch

from stormfusion.models import get_model
from stormfusion.models.sgt.detector import StormCellDetector
from stormfusion.models.sgt.graph import StormGNN, knn_graph
from stormfusion.models.sgt.seed.decoder import SeedDecoder
from stormfusion.models.sgt.seed.loss import SeedLossWeights, seed_loss
from stormfusion.models.sgt.seed.model import SeedStormGraphTransformer
from stormfusion.models.sgt.splat import GraphToGrid
from stormfusion.models.sgt.transformer import SpatioTemporalTransformer

#: Small seed-SGT arguments (every part present) for fast tests at 32-64 pixels.
SMALL = {
    "hidden_dim": 16,
    "encoder_width": 8,
    "gnn_layers": 2,
    "gnn_heads": 2,
    "transformer_layers": 1,
    "transformer_heads": 4,
    "patch_size": 2,
    "knn": 3,
    "peak_window": 3,
    "splat_sigma": 1.5,
    "edge_hidden": 8,
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def storm_batch(size: int = 32, t_in: int = 4) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Sample 0: three storm peaks; sample 1: clear sky (no cell: the dummy node)."""
    g = torch.Generator().manual_seed(0)
    vil = torch.rand(2, t_in, size, size, generator=g) * 20
    for row, col, value in ((5, 6, 200.0), (20, 25, 150.0), (26, 8, 240.0)):
        vil[0, :, row, col] = value
    inputs = {  # stored units at native resolution (IR half, lightning an eighth)
        "vil": vil,
        "ir069": -3000 + 1000 * torch.randn(2, t_in, size // 2, size // 2, generator=g),
        "ir107": -1000 + 2000 * torch.randn(2, t_in, size // 2, size // 2, generator=g),
        "lght": torch.poisson(torch.full((2, t_in, size // 8, size // 8), 0.5), generator=g),
    }
    return inputs, torch.ones(2, 4)


# -- parameter counts: the seed's published facts --------------------------------------------


def test_seed_parameter_counts_are_exact() -> None:
    model = get_model("sgt")
    assert isinstance(model, SeedStormGraphTransformer)
    assert model.modalities == ("vil", "ir069", "ir107", "lght")
    assert (model.input_frames, model.output_frames) == (12, 6)
    assert count(model) == 5_252_297
    assert count(get_model("sgt", output_frames=12)) == 5_252_297
    assert count(get_model("sgt", use_physics=False)) == 5_252_294
    assert count(get_model("sgt", modalities=["vil"])) == 3_019_529


def test_seed_parameter_counts_by_part() -> None:
    model = get_model("sgt")
    assert model.graph is not None and model.transformer is not None
    assert count(model.encoder.encoders["vil"]) == 727_872
    assert count(model.encoder.encoders) == 2_911_488
    assert count(model.encoder.fuse) == 65_664
    assert count(model.graph.node_in) == 16_512
    gnn = model.graph.gnn
    assert count(gnn) == 54_020
    assert count(gnn.edge_encoder) == 1_028
    assert [count(c) for c in gnn.convs] == [17_408] * 3
    assert [c.heads for c in gnn.convs] == [4] * 3  # GAT heads apart from the transformer's
    assert count(model.graph.splat) == 1
    assert count(model.transformer) == 1_842_048
    assert count(model.transformer.embed) == 1_048_704
    assert [count(b) for b in model.transformer.encoder.layers] == [198_272] * 4
    assert model.transformer.encoder.layers[0].self_attn.num_heads == 8
    assert count(model.decoder) == 362_564
    assert count(model.decoder.gru) == 198_144
    assert count(model.decoder.upsample) == 164_417


# -- forward shapes and range ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgt", "sgt_advect"])
def test_both_sgts_forecast_at_64(name: str) -> None:
    torch.manual_seed(0)
    args = {"patch_size": 4} if name == "sgt" else {}
    model = get_model(name, input_frames=3, output_frames=2, **args).eval()
    inputs, mask = storm_batch(size=64, t_in=3)
    with torch.no_grad():
        raw = model(inputs, mask)
    assert raw.shape == (2, 2, 64, 64) and torch.isfinite(raw).all()
    out = model.forecast(inputs, mask)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    if name == "sgt":  # Sigmoid times a decay below 1: already in range before clamping
        assert float(raw.min()) >= 0.0 and float(raw.max()) <= 255.0


@pytest.mark.parametrize("name", ["sgt", "sgt_advect"])
def test_both_sgts_forecast_at_384(name: str) -> None:
    """The study's grid (kept cheap: one sample, two frames, narrow layers)."""
    torch.manual_seed(0)
    small = {"hidden_dim": 16, "transformer_layers": 1, "gnn_layers": 1}
    if name == "sgt":
        small |= {"encoder_width": 8, "gnn_heads": 2, "transformer_heads": 2, "edge_hidden": 8}
    else:
        small |= {"encoder_channels": 8, "heads": 2}
    model = get_model(name, input_frames=2, output_frames=2, modalities=["vil"], **small)
    g = torch.Generator().manual_seed(0)
    vil = torch.rand(1, 2, 384, 384, generator=g) * 30
    vil[0, :, 100:104, 200:204] = 220.0
    out = model.eval().forecast({"vil": vil}, torch.ones(1, 4))
    assert out.shape == (1, 2, 384, 384) and torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0


def test_grid_not_a_multiple_of_the_patches_is_a_clear_error() -> None:
    from stormfusion.errors import StormFusionError

    model = get_model("sgt", input_frames=4, output_frames=2, **{**SMALL, "patch_size": 8})
    inputs, mask = storm_batch(size=48)
    with pytest.raises(StormFusionError, match="divisible by 32"):
        model(inputs, mask)


# -- the loss ---------------------------------------------------------------------------------

NO_PHYSICS = SeedLossWeights(use_physics=False)


def test_one_extreme_pixel_weighs_one_plus_two_over_p() -> None:
    target = torch.full((1, 1, 4, 4), 100.0)
    target[0, 0, 1, 2] = 200.0  # the only pixel strictly above 181: p = 1 / 16
    error = 0.3
    at_extreme = target / 255.0
    at_extreme[0, 0, 1, 2] += error
    at_other = target / 255.0
    at_other[0, 0, 3, 3] += error
    loss_extreme, terms = seed_loss(at_extreme, target, NO_PHYSICS)
    loss_other, _ = seed_loss(at_other, target, NO_PHYSICS)
    assert float(loss_other) == pytest.approx(error**2 / 16)
    assert float(loss_extreme) / float(loss_other) == pytest.approx(1 + 2 / (1 / 16))
    assert float(terms["extreme"]) == pytest.approx(error**2)  # the mean over the one pixel


def test_extreme_is_strictly_above_181_and_zero_without_such_pixels() -> None:
    target = torch.full((1, 1, 4, 4), 181.0)  # at the threshold: not extreme
    pred = torch.zeros(1, 1, 4, 4)
    loss, terms = seed_loss(pred, target, NO_PHYSICS)
    assert float(terms["extreme"]) == 0.0
    assert float(loss) == pytest.approx((181 / 255) ** 2)


def test_physics_terms_on_known_means_and_gradients() -> None:
    h, w = 5, 6
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    # frame means 0.2 and 0.5 against 0.1 and 0.1: conservation ((0.1)^2 + (0.4)^2) / 2
    pred = torch.stack([torch.full((h, w), 0.2), torch.full((h, w), 0.5)])[None]
    target = torch.full((1, 2, h, w), 0.1 * 255.0)
    _, terms = seed_loss(pred, target)
    assert float(terms["conservation"]) == pytest.approx((0.1**2 + 0.4**2) / 2)
    assert float(terms["gradient"]) == pytest.approx(0.0, abs=1e-12)
    # a ramp of 0.03 per row and 0.02 per column against a flat target, zero mean offset:
    ramp = 0.03 * (rows - rows.mean()) + 0.02 * (cols - cols.mean()) + 0.1
    pred = ramp[None, None].expand(1, 2, h, w)
    loss, terms = seed_loss(pred, target)
    assert float(terms["conservation"]) == pytest.approx(0.0, abs=1e-12)
    assert float(terms["gradient"]) == pytest.approx(0.03**2 + 0.02**2)
    mse = float(((ramp - 0.1) ** 2).mean())
    assert float(terms["mse"]) == pytest.approx(mse)
    expected = mse + 0.1 * (0.1 * 0.0 + 0.1 * (0.03**2 + 0.02**2))  # no extreme pixel
    assert float(loss) == pytest.approx(expected)


def test_model_loss_is_the_seed_loss_of_its_forecast() -> None:
    torch.manual_seed(0)
    model = get_model("sgt", input_frames=4, output_frames=2, **SMALL).eval()
    inputs, mask = storm_batch()
    target = torch.zeros(2, 2, 32, 32)
    target[:, :, :8] = 200.0
    _, terms = model.training_loss(inputs, mask, target)
    pred = model(inputs, mask) / 255.0
    expected, _ = seed_loss(pred, target)
    assert terms["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert set(terms) == {"loss", "mse", "extreme", "conservation", "gradient"}
    plain = get_model("sgt", input_frames=4, output_frames=2, use_extreme=False, **SMALL)
    plain.load_state_dict(model.state_dict())
    loss2, _ = plain.eval().training_loss(inputs, mask, target)
    assert float(loss2.detach()) == pytest.approx(terms["loss"] - 2.0 * terms["extreme"], rel=1e-5)


# -- the decoder's "physics" scalars ------------------------------------------------------------


def test_global_translation_and_decay_per_lead() -> None:
    decoder = SeedDecoder(hidden_dim=8, output_frames=2)
    assert decoder.motion is not None and decoder.decay is not None
    assert decoder.motion.tolist() == [0.0, 0.0] and float(decoder.decay) == pytest.approx(0.01)
    frames = torch.zeros(1, 2, 16, 16)
    frames[0, :, 5, 5] = 1.0
    with torch.no_grad():
        decoder.motion.copy_(torch.tensor([1.0, 2.0]))  # (u along columns, v along rows)
        decoder.decay.fill_(0.1)
        out = decoder.physics(frames)
    # lead t moves by (t + 1)(u, v) and decays by exp(-d (t + 1))
    assert float(out[0, 0, 7, 6]) == pytest.approx(math.exp(-0.1), abs=1e-5)
    assert float(out[0, 1, 9, 7]) == pytest.approx(math.exp(-0.2), abs=1e-5)
    assert float(out[0, 0].sum()) == pytest.approx(math.exp(-0.1), abs=1e-5)
    assert SeedDecoder(8, 2, physics=False).physics(frames) is frames


# -- ablations and gradients -----------------------------------------------------------------


@pytest.mark.parametrize("switch", ["use_gnn", "use_transformer", "use_physics", "use_extreme"])
def test_seed_ablations(switch: str) -> None:
    model = get_model("sgt", input_frames=4, output_frames=2, **{switch: False}, **SMALL)
    inputs, mask = storm_batch()
    assert model.forecast(inputs, mask).shape == (2, 2, 32, 32)
    full = count(get_model("sgt", input_frames=4, output_frames=2, **SMALL))
    if switch == "use_gnn":
        assert model.graph is None
    if switch == "use_transformer":
        assert model.transformer is None
    if switch == "use_physics":
        assert count(model) == full - 3 and model.decoder.motion is None
        loss, terms = model.training_loss(inputs, mask, torch.zeros(2, 2, 32, 32))
        assert float(loss) == pytest.approx(terms["mse"], rel=1e-6)  # no physics, no extreme
    if switch == "use_extreme":
        assert count(model) == full


def test_backward_reaches_every_seed_parameter() -> None:
    torch.manual_seed(0)
    model = get_model("sgt", input_frames=4, output_frames=2, **SMALL)
    inputs, mask = storm_batch()
    loss, _ = model.training_loss(inputs, mask, torch.full((2, 2, 32, 32), 190.0))
    loss.backward()
    unreached = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0
    ]
    assert not unreached


# -- the shared parts with the seed's settings ---------------------------------------------------


def test_even_window_and_the_dummy_centre_node() -> None:
    vil = torch.zeros(2, 12, 12)
    vil[0, 2, 2] = 150.0
    vil[0, 2, 6] = 120.0  # 4 columns right: outside the 8-window to the right of (2, 2)...
    vil[0, 9, 9] = 100.0
    cells = StormCellDetector(threshold=74, window=8, max_cells=5, centre_fallback=True)(vil)
    # ...but (2, 2) lies in (2, 6)'s window (4 before, 3 after): only the stronger survives
    assert cells.counts.tolist() == [2, 1]
    assert cells.rows[0, :2].tolist() == [2, 9] and cells.cols[0, :2].tolist() == [2, 9]
    # clear sky: one dummy cell at the centre
    assert (int(cells.rows[1, 0]), int(cells.cols[1, 0])) == (6, 6)
    assert float(cells.intensity[1, 0]) == 0.0


def test_offset_edges_are_in_grid_pixels() -> None:
    positions = torch.tensor([[[2.5 / 8, 1.5 / 4], [6.5 / 8, 3.5 / 4]]])  # pixels (2,1), (6,3)
    graph = knn_graph(positions, torch.ones(1, 2, dtype=torch.bool), 8, "offset", (8.0, 4.0))
    source, target = graph.edge_index
    first = int(torch.nonzero((source == 1) & (target == 0))[0])
    torch.testing.assert_close(graph.edge_attr[first], torch.tensor([math.sqrt(20.0), 2.0, 4.0]))


def test_edge_mlp_gat_stack_keeps_attention_normalised() -> None:
    torch.manual_seed(0)
    graph = knn_graph(torch.rand(1, 6, 2), torch.ones(1, 6, dtype=torch.bool), 3, "offset")
    gnn = StormGNN(16, layers=2, heads=4, edge_encoder=8, activation=False).eval()
    assert gnn.convs[0].lin_edge.in_channels == 4  # one encoded scalar per head
    assert gnn(torch.randn(6, 16), graph).shape == (6, 16)
    assert gnn.attention is not None
    edges, alpha = gnn.attention
    sums = torch.zeros(6, 4).index_add_(0, edges[1], alpha)
    torch.testing.assert_close(sums, torch.ones(6, 4))


def test_normalised_learnable_splat_sums_to_the_node_features() -> None:
    splat = GraphToGrid(4.0, units="pixels", learnable=True, normalize=True)
    assert [p.numel() for p in splat.parameters()] == [1]
    features = torch.tensor([[[2.0, -1.0], [0.5, 3.0]]])
    positions = torch.tensor([[[0.5, 0.5], [0.25, 0.75]]])
    grid, _ = splat(features, positions, torch.tensor([[True, False]]), 48, 48)
    torch.testing.assert_close(grid.sum(dim=(2, 3)), torch.tensor([[2.0, -1.0]]))
    # the kernel is the Gaussian of width 4 pixels around the node at pixel (23.5, 23.5)
    ratio = float(grid[0, 0, 23, 23 + 4] / grid[0, 0, 23, 23])
    assert ratio == pytest.approx(math.exp(-(3.5**2 - 0.5**2) / (2 * 16.0)), rel=1e-4)
    grid.sum().backward()
    assert splat.log_sigma is not None and splat.log_sigma.grad is not None


def test_upsampled_tokens_and_last_layer_attention() -> None:
    torch.manual_seed(0)
    block = SpatioTemporalTransformer(8, layers=2, heads=2, patch_size=4, unembed="upsample")
    assert block.unembed is None
    x = torch.randn(2, 8, 12, 16)
    assert block.eval()(x).shape == (2, 8, 12, 16)
    weights, hp, wp = block.last_attention(x)
    assert (hp, wp) == (3, 4) and weights.shape == (2, 12, 12)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 12))


def test_explain_attention_maps_from_the_cells_patches() -> None:
    torch.manual_seed(0)
    model = get_model("sgt", input_frames=4, output_frames=2, **SMALL)
    inputs, mask = storm_batch()
    maps = model.explain_attention(inputs, mask)
    assert len(maps) == 2 and maps[0].shape == (4, 4)  # 32 / 4 / patch 2
    for m in maps:
        assert float(m.sum()) == pytest.approx(1.0, abs=1e-5) and (m >= 0).all()
    graphs = model.explain(inputs, mask)
    assert graphs[0]["positions"].shape == (3, 2) and graphs[1]["positions"].shape == (1, 2)
    torch.testing.assert_close(graphs[1]["positions"][0], torch.tensor([4.5 / 8, 4.5 / 8]))
    from stormfusion.errors import StormFusionError

    with pytest.raises(StormFusionError, match="no transformer"):
        get_model(
            "sgt", input_frames=4, output_frames=2, use_transformer=False, **SMALL
        ).explain_attention(inputs, mask)
