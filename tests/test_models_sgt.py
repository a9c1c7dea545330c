"""Known answers of the shared SGT parts and of our ``sgt_advect`` (the seed's ``sgt``:
tests/test_models_sgt_seed.py)."""

from __future__ import annotations

import math

import pytest
import torch

from stormfusion.models import get_model
from stormfusion.models.sgt.advect.decoder import DecoderOutput, PhysicsDecoder
from stormfusion.models.sgt.advect.model import AdvectStormGraphTransformer
from stormfusion.models.sgt.detector import StormCellDetector
from stormfusion.models.sgt.graph import StormGNN, knn_graph
from stormfusion.models.sgt.splat import GraphToGrid
from stormfusion.models.sgt.transformer import SpatioTemporalTransformer, sincos_2d

SMALL = {
    "hidden_dim": 16,
    "encoder_channels": 8,
    "gnn_layers": 2,
    "transformer_layers": 1,
    "heads": 2,
    "patch_size": 2,
    "min_separation": 3,
    "knn": 3,
}


def storm_batch(size: int = 32, t_in: int = 4) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Sample 0: three storm peaks; sample 1: clear sky (no cell)."""
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


# -- StormCellDetector --------------------------------------------------------------------


def test_detector_finds_planted_peaks_strongest_first() -> None:
    vil = torch.zeros(1, 40, 48)
    planted = [(30, 10, 230.0), (5, 40, 120.0), (18, 22, 180.0)]  # (row, col, VIL)
    for row, col, value in planted:
        vil[0, row, col] = value
    vil[0, 31, 10] = 200.0  # a shoulder of the first peak: not a cell
    vil[0, 2, 2] = 60.0  # below the threshold
    cells = StormCellDetector(threshold=74, window=9, max_cells=10)(vil)
    assert int(cells.counts[0]) == 3
    assert cells.rows[0, :3].tolist() == [30, 18, 5]
    assert cells.cols[0, :3].tolist() == [10, 22, 40]
    torch.testing.assert_close(cells.intensity[0, :3], torch.tensor([230.0, 180.0, 120.0]))
    # (x, y): pixel centres in [0, 1], y along rows (row 0 = south, so y grows northwards)
    torch.testing.assert_close(cells.positions[0, 0], torch.tensor([10.5 / 48, 30.5 / 40]))
    assert not cells.valid[0, 3:].any()


def test_detector_respects_cap_separation_and_plateaus() -> None:
    vil = torch.zeros(2, 64, 64)
    values = torch.arange(36, dtype=torch.float32) + 100.0
    for i in range(36):  # a 6 x 6 lattice of peaks 10 px apart
        vil[0, 5 + 10 * (i // 6), 5 + 10 * (i % 6)] = values[i]
    vil[1, 10:20, 10:20] = 200.0  # one flat-topped cell
    vil[1, 40, 40] = 150.0
    vil[1, 40, 42] = 140.0  # closer than min_separation to the 150 peak
    cells = StormCellDetector(threshold=74, window=9, max_cells=8)(vil)
    assert cells.counts.tolist() == [8, 2]
    torch.testing.assert_close(cells.intensity[0], values.flip(0)[:8])  # the 8 strongest
    assert sorted(cells.intensity[1, :2].tolist()) == [150.0, 200.0]


def test_detector_clear_sky_has_no_cells() -> None:
    cells = StormCellDetector()(torch.full((3, 32, 32), 10.0))
    assert cells.counts.tolist() == [0, 0, 0]


# -- kNN graph and StormGNN ---------------------------------------------------------------


def test_knn_graph_matches_brute_force_and_keeps_samples_apart() -> None:
    g = torch.Generator().manual_seed(1)
    positions = torch.rand(3, 6, 2, generator=g)
    valid = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]).bool()
    graph = knn_graph(positions, valid, k=3)
    assert graph.batch.tolist() == [0] * 5 + [1] * 2
    assert graph.edge_index.shape[1] == 5 * 3 + 2 * 1  # min(k, n - 1) neighbours per node
    source, target = graph.edge_index
    assert (graph.batch[source] == graph.batch[target]).all()
    assert (source != target).all()
    nodes = positions[valid]
    for node in range(5):  # sample 0: incoming edges come from the 3 nearest other cells
        d = (nodes[:5] - nodes[node]).norm(dim=1)
        d[node] = math.inf
        expected = set(d.topk(3, largest=False).indices.tolist())
        assert set(source[target == node].tolist()) == expected
    delta = nodes[source] - nodes[target]
    torch.testing.assert_close(graph.edge_attr[:, 0], delta.norm(dim=1))
    torch.testing.assert_close(graph.edge_attr[:, 1:], delta / delta.norm(dim=1, keepdim=True))


def test_gat_attention_sums_to_one_over_each_nodes_neighbours() -> None:
    torch.manual_seed(0)
    positions = torch.rand(2, 7, 2)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 4:] = False
    graph = knn_graph(positions, valid, k=4)
    gnn = StormGNN(hidden_dim=16, layers=2, heads=4)
    out = gnn(torch.randn(int(valid.sum()), 16), graph)
    assert out.shape == (11, 16)
    assert gnn.attention is not None
    edges, alpha = gnn.attention  # includes GATConv's self loops
    assert alpha.shape == (edges.shape[1], 4)
    sums = torch.zeros(11, 4).index_add_(0, edges[1], alpha)
    torch.testing.assert_close(sums, torch.ones(11, 4))
    per_edge = gnn.edge_attention(graph.edge_index, 11)
    assert per_edge.shape == (graph.edge_index.shape[1],)
    assert (per_edge > 0).all() and (per_edge < 1).all()


def test_empty_graph_runs_through_the_gnn() -> None:
    graph = knn_graph(torch.zeros(2, 4, 2), torch.zeros(2, 4, dtype=torch.bool), k=3)
    assert graph.edge_index.shape == (2, 0) and graph.batch.numel() == 0
    out = StormGNN(hidden_dim=8, layers=2, heads=2)(torch.zeros(0, 8), graph)
    assert out.shape == (0, 8)


# -- GraphToGrid ----------------------------------------------------------------------------


def test_splatting_a_single_node_reproduces_the_gaussian_and_its_total() -> None:
    splat = GraphToGrid(sigma=0.05)
    h = w = 64
    features = torch.tensor([[[2.0, -3.0]]])  # (B=1, K=1, C=2)
    position = torch.tensor([[[20.5 / w, 40.5 / h]]])  # the centre of pixel (row 40, col 20)
    grid, density = splat(features, position, torch.ones(1, 1, dtype=torch.bool), h, w)
    assert grid.shape == (1, 2, h, w) and density.shape == (1, 1, h, w)
    sigma_px = 0.05 * w
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    kernel = torch.exp(-((cols - 20.0) ** 2 + (rows - 40.0) ** 2) / (2 * sigma_px**2))
    torch.testing.assert_close(density[0, 0], kernel)
    torch.testing.assert_close(grid[0, 0], 2.0 * kernel)
    torch.testing.assert_close(grid[0, 1], -3.0 * kernel)
    assert float(grid[0, 0, 40, 20]) == pytest.approx(2.0)
    expected_total = 2.0 * 2 * math.pi * sigma_px**2
    assert splat.total(h, w) == pytest.approx(2 * math.pi * sigma_px**2)
    assert float(grid[0, 0].sum()) == pytest.approx(expected_total, rel=1e-3)
    # an invalid slot contributes nothing
    none, _ = splat(features, position, torch.zeros(1, 1, dtype=torch.bool), h, w)
    assert not none.any()


# -- transformer, decoder physics -----------------------------------------------------------


def test_positional_encoding_and_transformer_work_on_any_grid() -> None:
    pe = sincos_2d(3, 5, 8, torch.device("cpu"), torch.float32)
    assert pe.shape == (15, 8)
    assert len({tuple(row.tolist()) for row in pe}) == 15  # every patch has its own code
    block = SpatioTemporalTransformer(dim=8, layers=1, heads=2, patch_size=2)
    for size in (4, 12):
        assert block(torch.randn(2, 8, size, size)).shape == (2, 8, size, size)


def test_advection_residual_vanishes_for_exact_advection() -> None:
    """I(x, t) = a * (x - u t) moved at u px/frame solves dI/dt + u dI/dx = 0 exactly."""
    h, w, u = 16, 20, 1.5
    cols = torch.arange(w, dtype=torch.float32)[None, None, None, :].expand(1, 1, h, w)
    last = 0.01 * cols
    frames = torch.cat([0.01 * (cols - u * t) for t in range(1, 4)], dim=1)
    velocity = torch.zeros(1, 2, h, w)
    velocity[:, 0] = u
    advection, smoothness = PhysicsDecoder.physics_terms(DecoderOutput(frames, velocity), last)
    assert float(advection) == pytest.approx(0.0, abs=1e-10)
    assert float(smoothness) == 0.0
    velocity[:, 0] = -u  # the wrong direction: residual (2 a u)^2
    advection, _ = PhysicsDecoder.physics_terms(DecoderOutput(frames, velocity), last)
    assert float(advection) == pytest.approx((2 * 0.01 * u) ** 2, rel=1e-4)


def test_decoder_advects_with_its_velocity() -> None:
    """A uniform velocity of +2 px/frame along x moves a blob 2 px per lead."""
    decoder = PhysicsDecoder(hidden_dim=8, output_frames=2).eval()
    assert decoder.velocity is not None
    with torch.no_grad():
        for p in decoder.source.parameters():
            p.zero_()
        decoder.velocity.weight.zero_()
        decoder.velocity.bias.copy_(torch.tensor([2.0 / 32, 0.0]) / torch.exp(decoder.log_speed))
    last = torch.zeros(1, 1, 32, 32)
    last[0, 0, 10, 8] = 1.0
    with torch.no_grad():
        out = decoder(torch.randn(1, 8, 8, 8), last)
    assert out.velocity is not None
    torch.testing.assert_close(out.velocity[:, 0], torch.full((1, 32, 32), 2.0))
    assert float(out.frames[0, 0, 10, 10]) == pytest.approx(1.0, abs=1e-5)
    assert float(out.frames[0, 1, 10, 12]) == pytest.approx(1.0, abs=1e-5)
    assert float(out.frames[0, 1].sum()) == pytest.approx(1.0, abs=1e-4)


# -- the whole model ------------------------------------------------------------------------


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = get_model("sgt_advect", input_frames=4, output_frames=2, **SMALL)
    inputs, mask = storm_batch()
    mask[1, 2] = 0.0  # a missing modality: its learned embedding is used
    inputs["ir107"][1] = 0.0
    target = torch.full((2, 2, 32, 32), 190.0)  # extreme pixels too
    loss, terms = model.training_loss(inputs, mask, target)
    loss.backward()
    unreached = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0
    ]
    assert not unreached
    assert set(terms) == {"loss", "mse", "extreme", "physics_advection", "physics_smoothness"}


def test_advect_defaults_and_parameter_count() -> None:
    model = get_model("sgt_advect")
    assert isinstance(model, AdvectStormGraphTransformer)
    assert model.modalities == ("vil", "ir069", "ir107", "lght")
    assert (model.input_frames, model.output_frames, model.hidden_dim) == (12, 6, 128)
    assert model.graph is not None and len(model.graph.gnn.convs) == 3
    assert model.transformer is not None and len(model.transformer.encoder.layers) == 4
    assert model.graph.gnn.convs[0].heads == 8
    assert (model.lambda_physics, model.lambda_extreme) == (0.1, 2.0)
    # documented in docs/models.md
    assert sum(p.numel() for p in model.parameters()) == 2_075_151


def test_loss_terms_follow_the_formula_and_the_switches() -> None:
    torch.manual_seed(0)
    inputs, mask = storm_batch()
    target = torch.zeros(2, 2, 32, 32)
    target[:, :, :8] = 200.0
    full = get_model("sgt_advect", input_frames=4, output_frames=2, **SMALL)
    loss, t = full.training_loss(inputs, mask, target)
    expected = (
        t["mse"] + 0.1 * (t["physics_advection"] + t["physics_smoothness"]) + 2.0 * t["extreme"]
    )
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # the extreme term is the squared error on target >= 181 pixels, averaged over all pixels
    pred = full(inputs, mask).detach() / 255.0
    manual = (((pred - target / 255.0) ** 2) * (target >= 181)).mean()
    assert t["extreme"] == pytest.approx(float(manual), rel=1e-4)
    no_extreme = get_model(
        "sgt_advect", input_frames=4, output_frames=2, use_extreme=False, **SMALL
    )
    no_extreme.load_state_dict(full.state_dict())
    loss2, _ = no_extreme.training_loss(inputs, mask, target)
    assert float(loss2.detach()) == pytest.approx(t["loss"] - 2.0 * t["extreme"], rel=1e-5)
    no_physics = get_model(
        "sgt_advect", input_frames=4, output_frames=2, use_physics=False, **SMALL
    )
    _, t3 = no_physics.training_loss(inputs, mask, target)
    assert t3["physics_advection"] == 0.0 and no_physics.decoder.velocity is None


@pytest.mark.parametrize("switch", ["use_gnn", "use_transformer", "use_physics", "use_extreme"])
def test_ablations_forecast(switch: str) -> None:
    model = get_model("sgt_advect", input_frames=4, output_frames=2, **{switch: False}, **SMALL)
    inputs, mask = storm_batch()
    out = model.forecast(inputs, mask)
    assert out.shape == (2, 2, 32, 32)
    if switch == "use_gnn":
        assert model.graph is None and not any("gnn" in n for n, _ in model.named_parameters())
    if switch == "use_transformer":
        assert model.transformer is None


def test_empty_graph_sample_and_explain() -> None:
    torch.manual_seed(0)
    model = get_model("sgt_advect", input_frames=4, output_frames=2, **SMALL).eval()
    inputs, mask = storm_batch()
    clear = {k: v[1:] for k, v in inputs.items()}
    assert model.forecast(clear, mask[1:]).shape == (1, 2, 32, 32)  # a batch with no cell
    explained = model.explain(inputs, mask)
    assert len(explained) == 2
    storm, sky = explained
    assert storm["positions"].shape == (3, 2)
    torch.testing.assert_close(
        storm["intensity"], torch.tensor([240.0, 200.0, 150.0]), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(storm["positions"][0], torch.tensor([8.5 / 32, 26.5 / 32]))
    assert storm["edge_index"].shape == (2, 3 * 2)  # knn=3 capped at n - 1 = 2
    assert storm["edge_index"].max() < 3
    assert storm["attention"].shape == (6,)
    assert ((storm["attention"] > 0) & (storm["attention"] < 1)).all()
    assert sky["positions"].shape == (0, 2) and sky["edge_index"].shape == (2, 0)
    assert sky["attention"].shape == (0,) and sky["intensity"].shape == (0,)
    no_gnn = get_model("sgt_advect", input_frames=4, output_frames=2, use_gnn=False, **SMALL)
    assert no_gnn.explain(inputs, mask)[0]["edge_index"].shape == (2, 0)


def test_missing_modality_uses_the_learned_embedding() -> None:
    """A masked modality's values do not reach the forecast."""
    torch.manual_seed(0)
    model = get_model("sgt_advect", input_frames=4, output_frames=2, **SMALL).eval()
    inputs, mask = storm_batch()
    mask[:, 3] = 0.0
    changed = dict(inputs, lght=inputs["lght"] * 10 + 3)
    torch.testing.assert_close(model.forecast(inputs, mask), model.forecast(changed, mask))


def test_explain_leaves_training_state_alone() -> None:
    model = get_model("sgt_advect", input_frames=4, output_frames=2, **SMALL).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.explain(*storm_batch())
    assert model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
