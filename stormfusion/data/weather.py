"""Synthetic convective weather for the SEVIR twin: storm cells that move, grow, split, merge.

One event is 49 frames, 5 minutes apart, on a 384 km x 384 km patch. The model is built in
physical units (km, km per frame, digital VIL) and rendered at any grid size, so the same
seed gives the same storm at 64 or 384 pixels per side.

Dynamics (per frame, explicit Euler):

- a smoothly varying wind ``U(x, y, t) = U0 + A (sin(2 pi y / L + w t + p1), cos(2 pi x / L +
  w t + p2))`` with ``|U0|`` 30-70 km/h, so cells move about 0.4-1 pixel per frame at 64
  pixels (2.5-6 at 384) and curve as they go;
- every cell follows the wind plus its own small deviation (right-movers);
- a storm event's patch is centred (within about 15 km) on its cells at frame 24, the
  frame nearest ``time_utc``, as SEVIR centres patches on the storm report;
- a cell's amplitude follows a life cycle ``A sin(pi s)^1.5`` over its lifetime ``s`` in
  [0, 1] (growth, maturity, decay), with cells born before and during the event;
- splitting: at a drawn frame a cell sheds a child that leaves at an angle; the two share
  the parent's intensity;
- merging: when two converging cells overlap, the weaker one is drawn into the stronger,
  fades, and the stronger one intensifies; one pair per storm event is set on a converging
  course.

Rendering: each cell is an anisotropic Gaussian core plus a broad stratiform shield,
multiplied by an advected log-normal texture; values below digital 8 are clipped to 0, so
most pixels are 0 and only the cores exceed 181 (rarely 219). IR brightness temperatures are
a cloud-top model over a broader anvil field (coldest, about -68 C, over the strongest
cores); lightning flashes are drawn as a Poisson process from VIL pixels >= 133, denser
where VIL is higher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from stormfusion.data.sevir import FRAME_MINUTES, N_FRAMES, PATCH_METRES, VIL_MISSING

#: Patch side in km.
PATCH_KM: Final = PATCH_METRES / 1000.0
#: Digital VIL below which the radar product reports 0.
VIL_FLOOR: Final = 8.0
#: Soft saturation of the VIL cores: ``knee + (254 - knee) tanh((v - knee) / width)``.
SATURATION_KNEE: Final = 170.0
SATURATION_WIDTH: Final = 120.0
#: Frames rendered together (one vectorised Gaussian per cell and block).
_RENDER_BLOCK: Final = 8
#: Lightning is drawn from pixels at or above this digital VIL.
LIGHTNING_VIL: Final = 133
#: Expected flashes per km^2 per frame at digital VIL 254.
FLASH_RATE_KM2: Final = 0.25


@dataclass(frozen=True)
class EventWeather:
    """One event, as the archive stores it.

    Attributes:
        vil: (S, S, 49) uint8 digital VIL, rows south to north (255 only where missing).
        ir069: (S/2, S/2, 49) int16, brightness temperature x 100 (degrees C).
        ir107: (S/2, S/2, 49) int16, brightness temperature x 100 (degrees C).
        flashes: (n, 3) float64 ``[t, x, y]``: seconds from ``time_utc`` and position in
            pixels of the (S/8) x (S/8) lightning grid (the caller adds lat/lon).
    """

    vil: np.ndarray
    ir069: np.ndarray
    ir107: np.ndarray
    flashes: np.ndarray


@dataclass
class _Cells:
    """Cell state; arrays grow when cells split."""

    pos: np.ndarray  # (n, 2) km
    dev: np.ndarray  # (n, 2) own velocity deviation, km/frame
    peak: np.ndarray  # (n,) digital VIL at maturity
    birth: np.ndarray  # (n,) frame of birth (may be negative)
    life: np.ndarray  # (n,) lifetime in frames
    sigma: np.ndarray  # (n,) core radius, km
    elong: np.ndarray  # (n,) aspect ratio >= 1
    theta: np.ndarray  # (n,) orientation, radians
    mult: np.ndarray  # (n,) intensity multiplier (split shares, merges)
    split_at: np.ndarray  # (n,) frame of the split, -1 = never
    host: np.ndarray  # (n,) the cell this one is merging into, -1 = none

    def append(self, **values: np.ndarray | float) -> None:
        for name, value in values.items():
            current = getattr(self, name)
            setattr(self, name, np.concatenate([current, np.asarray(value)[None]], axis=0))

    def __len__(self) -> int:
        return int(self.peak.shape[0])


@dataclass(frozen=True)
class _Wind:
    base: np.ndarray  # (2,) km/frame
    amp: float  # km/frame
    wavelength: float  # km
    omega: float  # rad/frame
    phase: np.ndarray  # (2,)

    def at(self, pos: np.ndarray, frame: int) -> np.ndarray:
        k = 2.0 * np.pi / self.wavelength
        u = self.base[0] + self.amp * np.sin(k * pos[:, 1] + self.omega * frame + self.phase[0])
        v = self.base[1] + self.amp * np.cos(k * pos[:, 0] + self.omega * frame + self.phase[1])
        return np.stack([u, v], axis=1)


def _draw_wind(rng: np.random.Generator) -> _Wind:
    speed_kmh = rng.uniform(30.0, 70.0)
    # mostly from the south-west, as over the Great Plains
    direction = np.radians(rng.normal(40.0, 35.0))
    per_frame = speed_kmh * FRAME_MINUTES / 60.0
    base = per_frame * np.array([np.sin(direction), np.cos(direction)])
    return _Wind(
        base=base,
        amp=0.3 * per_frame,
        wavelength=float(rng.uniform(250.0, 450.0)),
        omega=float(rng.uniform(0.02, 0.06)),
        phase=rng.uniform(0.0, 2.0 * np.pi, size=2),
    )


def _draw_cells(rng: np.random.Generator, storm: bool) -> _Cells:
    n = int(rng.integers(4, 10)) if storm else int(rng.integers(0, 3))
    centre = PATCH_KM / 2.0
    spread = 70.0 if storm else 120.0
    pos = np.clip(rng.normal(centre, spread, size=(n, 2)), 20.0, PATCH_KM - 20.0)
    if storm:
        # heavy-tailed peaks: most cells mature at 120-200, some exceed 219
        peak = np.clip(rng.lognormal(np.log(160.0), 0.2, size=n), 80.0, 260.0)
    else:
        peak = rng.uniform(30.0, 110.0, size=n)
    cells = _Cells(
        pos=pos,
        dev=rng.normal(0.0, 0.4, size=(n, 2)),
        peak=peak,
        birth=rng.integers(-40, 30, size=n).astype(np.float64),
        life=rng.uniform(45.0, 110.0, size=n),
        sigma=rng.uniform(5.0, 11.0, size=n) if storm else rng.uniform(8.0, 20.0, size=n),
        elong=rng.uniform(1.0, 1.8, size=n),
        theta=rng.uniform(0.0, np.pi, size=n),
        mult=np.ones(n),
        split_at=np.where(
            rng.random(n) < (0.4 if storm else 0.0), rng.integers(8, 40, size=n), -1
        ).astype(np.int64),
        host=np.full(n, -1, dtype=np.int64),
    )
    if storm and n >= 2:
        # one pair on a converging course: cell 1 starts 30-50 km from cell 0 and closes in
        gap = rng.uniform(30.0, 50.0)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        offset = gap * np.array([np.cos(angle), np.sin(angle)])
        cells.pos[1] = np.clip(cells.pos[0] + offset, 10.0, PATCH_KM - 10.0)
        closing_frames = rng.uniform(15.0, 30.0)
        cells.dev[1] = cells.dev[0] + (cells.pos[0] - cells.pos[1]) / closing_frames
        cells.birth[:2] = np.minimum(cells.birth[:2], -20.0)
    return cells


def _envelope(cells: _Cells, frame: float) -> np.ndarray:
    s = np.clip((frame - cells.birth) / cells.life, 0.0, 1.0)
    return cells.peak * cells.mult * np.sin(np.pi * s) ** 1.5


def _step(cells: _Cells, wind: _Wind, frame: int, rng: np.random.Generator) -> None:
    """Advance the cells by one frame: splits, merges, then advection."""
    for c in np.flatnonzero(cells.split_at == frame):
        motion = wind.at(cells.pos[c : c + 1], frame)[0] + cells.dev[c]
        norm = float(np.hypot(*motion)) or 1.0
        perp = np.array([-motion[1], motion[0]]) / norm * rng.choice([-1.0, 1.0])
        share = rng.uniform(0.35, 0.5)
        cells.append(
            pos=cells.pos[c] + perp * cells.sigma[c] * 0.5,
            dev=cells.dev[c] + perp * rng.uniform(0.6, 1.2),
            peak=cells.peak[c] * share * 1.6,
            birth=frame - 0.35 * cells.life[c],
            life=cells.life[c],
            sigma=cells.sigma[c] * 0.85,
            elong=cells.elong[c],
            theta=cells.theta[c],
            mult=1.0,
            split_at=-1,
            host=-1,
        )
        cells.mult[c] *= 1.0 - share
        cells.split_at[c] = -1
    amp = _envelope(cells, frame)
    velocity = wind.at(cells.pos, frame) + cells.dev
    n = len(cells)
    if n >= 2:
        diff = cells.pos[:, None, :] - cells.pos[None, :, :]
        dist = np.hypot(diff[..., 0], diff[..., 1])
        touching = dist < 0.9 * (cells.sigma[:, None] + cells.sigma[None, :])
        # only converging pairs merge (a cell and its split-off child move apart)
        closing = (diff * (velocity[:, None, :] - velocity[None, :, :])).sum(axis=-1) < 0.0
        merging = touching & closing
        np.fill_diagonal(merging, False)
        for i, j in zip(*np.nonzero(np.triu(merging)), strict=True):
            if amp[i] <= 0.0 or amp[j] <= 0.0 or cells.host[i] >= 0 or cells.host[j] >= 0:
                continue
            weak, strong = (i, j) if amp[i] < amp[j] else (j, i)
            cells.host[weak] = strong
    # an absorbed cell is drawn into its host, moves with it and fades; the host intensifies
    for weak in np.flatnonzero(cells.host >= 0):
        strong = int(cells.host[weak])
        cells.pos[weak] += 0.4 * (cells.pos[strong] - cells.pos[weak])
        velocity[weak] = velocity[strong]
        cells.dev[weak] = cells.dev[strong]
        cells.mult[weak] *= 0.75
        cells.mult[strong] = min(cells.mult[strong] * 1.04, 1.35)
    cells.pos += velocity


#: Log-amplitude of the texture: texture = exp(TEXTURE_SIGMA * N(0, 1) - TEXTURE_SIGMA^2 / 2).
TEXTURE_SIGMA: Final = 0.35


@dataclass(frozen=True)
class _Texture:
    """An advected log-normal texture (fine structure inside the cells): a sum of plane
    waves ``sin(k . (p - drift t) + phase)`` with wavelengths of 12-60 km."""

    k: np.ndarray  # (n, 2) wave vectors (x, y), rad/km
    phase: np.ndarray  # (n,)
    drift: np.ndarray  # (2,) km/frame

    @classmethod
    def draw(cls, rng: np.random.Generator, drift: np.ndarray, n_modes: int) -> _Texture:
        wavelengths = rng.uniform(12.0, 60.0, size=n_modes)
        angles = rng.uniform(0.0, 2.0 * np.pi, size=n_modes)
        phases = rng.uniform(0.0, 2.0 * np.pi, size=n_modes)
        k = (2.0 * np.pi / wavelengths)[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
        return cls(k=k, phase=phases, drift=np.asarray(drift, dtype=np.float64))

    @property
    def _scale(self) -> float:
        return TEXTURE_SIGMA * float(np.sqrt(2.0 / self.k.shape[0]))

    def grid(self, coords: np.ndarray) -> np.ndarray:
        """The texture on a square grid (coords in km, both axes): shape (49, S, S)."""
        size = coords.shape[0]
        out = np.zeros((N_FRAMES, size, size), dtype=np.float32)
        frames = np.arange(N_FRAMES, dtype=np.float64)
        for (kx, ky), ph in zip(self.k, self.phase, strict=True):
            shift = ph - (kx * self.drift[0] + ky * self.drift[1]) * frames  # (T,)
            ax, ay = kx * coords, ky * coords
            # sin(ax + ay + shift) = sin(ax + shift) cos(ay) + cos(ax + shift) sin(ay)
            sx = np.sin(ax[None, :] + shift[:, None]).astype(np.float32)  # (T, S)
            cx = np.cos(ax[None, :] + shift[:, None]).astype(np.float32)
            out += sx[:, None, :] * np.cos(ay).astype(np.float32)[None, :, None]
            out += cx[:, None, :] * np.sin(ay).astype(np.float32)[None, :, None]
        out *= np.float32(self._scale)
        return np.exp(out - np.float32(TEXTURE_SIGMA**2 / 2.0))


def _render(
    positions: np.ndarray,
    amplitudes: np.ndarray,
    cells: _Cells,
    coords: np.ndarray,
    radius_scale: float,
    stratiform: float,
) -> np.ndarray:
    """Sum of anisotropic Gaussians, shape (49, S, S), in digital VIL units."""
    size = coords.shape[0]
    field = np.zeros((N_FRAMES, size, size), dtype=np.float32)
    for c in range(amplitudes.shape[1]):
        live = np.flatnonzero(amplitudes[:, c] > 0.5)
        if live.size == 0:
            continue
        cos_t, sin_t = np.cos(cells.theta[c]), np.sin(cells.theta[c])
        for scale, weight in ((1.0, 1.0), (3.0, stratiform)):
            if weight <= 0.0:
                continue
            sig_a = cells.sigma[c] * radius_scale * scale * np.sqrt(cells.elong[c])
            sig_b = cells.sigma[c] * radius_scale * scale / np.sqrt(cells.elong[c])
            reach = 3.5 * sig_a
            # frames in blocks of 8: one vectorised Gaussian per block over the block's box
            for block in np.array_split(live, -(-live.size // _RENDER_BLOCK)):
                cx = positions[block, c, 0][:, None, None]
                cy = positions[block, c, 1][:, None, None]
                xs = np.flatnonzero((coords > cx.min() - reach) & (coords < cx.max() + reach))
                ys = np.flatnonzero((coords > cy.min() - reach) & (coords < cy.max() + reach))
                if xs.size == 0 or ys.size == 0:
                    continue
                dx = (coords[xs][None, None, :] - cx).astype(np.float32)  # (B, 1, X)
                dy = (coords[ys][None, :, None] - cy).astype(np.float32)  # (B, Y, 1)
                a = dx * np.float32(cos_t / sig_a) + dy * np.float32(sin_t / sig_a)
                b = dy * np.float32(cos_t / sig_b) - dx * np.float32(sin_t / sig_b)
                amp = (weight * amplitudes[block, c])[:, None, None].astype(np.float32)
                field[block, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] += amp * np.exp(
                    np.float32(-0.5) * (a * a + b * b)
                )
    return field


def _brightness_temperature(cloud: np.ndarray, surface_c: np.ndarray, top_c: float) -> np.ndarray:
    """Cloud-top model: ``T = T_sfc - (T_sfc - T_top) (1 - exp(-3 cloud))``, stored x 100."""
    opacity = 1.0 - np.exp(-3.0 * cloud)
    temp = surface_c - (surface_c - top_c) * opacity
    return np.round(temp * 100.0).astype(np.int16)


def simulate_event(
    rng: np.random.Generator,
    image_size: int,
    storm: bool,
    month: int,
    missing_fraction: float = 0.0,
) -> EventWeather:
    """Simulate one event.

    Args:
        rng: the event's own generator (its stream fixes the event).
        image_size: VIL pixels per side ``S`` (divisible by 8); IR uses S/2, lightning S/8.
        storm: a storm event (convective cells) or a random one (weak or no precipitation).
        month: 1..12, sets the surface brightness temperature.
        missing_fraction: fraction of the VIL patch (a corner beyond radar coverage) set to
            255 = missing in every frame.

    Returns:
        The stored arrays of the event (see :class:`EventWeather`).
    """
    if image_size % 8 != 0 or image_size < 16:
        raise ValueError(f"image_size must be a multiple of 8 and >= 16, got {image_size}")
    wind = _draw_wind(rng)
    cells = _draw_cells(rng, storm)
    pos_arr, amp_arr = _track_cells(rng, cells, wind)
    if storm:
        _centre_on_storm(rng, pos_arr, amp_arr)
    vil_tyx, vil_px = _render_vil(rng, pos_arr, amp_arr, cells, wind, image_size)
    ir069, ir107 = _render_ir(rng, pos_arr, amp_arr, cells, wind, image_size // 2, month)
    flashes = _lightning(rng, vil_tyx, vil_px, image_size // 8)
    if missing_fraction > 0.0:
        _cut_missing_corner(vil_tyx, missing_fraction)
    return EventWeather(
        vil=np.ascontiguousarray(vil_tyx.transpose(1, 2, 0)),
        ir069=np.ascontiguousarray(ir069.transpose(1, 2, 0)),
        ir107=np.ascontiguousarray(ir107.transpose(1, 2, 0)),
        flashes=flashes,
    )


def _track_cells(
    rng: np.random.Generator, cells: _Cells, wind: _Wind
) -> tuple[np.ndarray, np.ndarray]:
    """Step the cells through all frames (``cells`` grows as cells are born).

    Returns:
        positions (T, C, 2) in km and amplitudes (T, C), zero before a cell is born,
        with ``C`` the number of cells at the end.
    """
    positions: list[np.ndarray] = []
    amplitudes: list[np.ndarray] = []
    for frame in range(N_FRAMES):
        positions.append(cells.pos.copy())
        amplitudes.append(_envelope(cells, frame))
        _step(cells, wind, frame, rng)
    n_final = len(cells)
    pos_arr = np.zeros((N_FRAMES, n_final, 2))
    amp_arr = np.zeros((N_FRAMES, n_final))
    for t in range(N_FRAMES):
        k = positions[t].shape[0]
        pos_arr[t, :k] = positions[t]
        amp_arr[t, :k] = amplitudes[t]
    return pos_arr, amp_arr


def _centre_on_storm(rng: np.random.Generator, pos_arr: np.ndarray, amp_arr: np.ndarray) -> None:
    """Shift ``pos_arr`` (T, C, 2) km in place so the storm sits near the patch centre.

    The archive centres a storm event's patch on the storm near time_utc (frame 24): the
    amplitude-weighted centroid of that frame moves to the centre, jittered by 15 km.
    """
    weight = amp_arr[N_FRAMES // 2]
    if weight.sum() > 0:
        centroid = (pos_arr[N_FRAMES // 2] * weight[:, None]).sum(axis=0) / weight.sum()
        pos_arr += PATCH_KM / 2.0 + rng.normal(0.0, 15.0, size=2) - centroid


def _render_vil(
    rng: np.random.Generator,
    pos_arr: np.ndarray,
    amp_arr: np.ndarray,
    cells: _Cells,
    wind: _Wind,
    image_size: int,
) -> tuple[np.ndarray, float]:
    """VIL frames (T, S, S) uint8 in 0..254, textured and softly saturated in the cores.

    Returns the frames and the VIL pixel size in km.
    """
    vil_px = PATCH_KM / image_size
    vil_coords = (np.arange(image_size) + 0.5) * vil_px
    texture = _Texture.draw(rng, wind.base, n_modes=12)
    field = _render(pos_arr, amp_arr, cells, vil_coords, 1.0, 0.45) * texture.grid(vil_coords)
    field[field < VIL_FLOOR] = 0.0
    # soft saturation of the cores: above 181 is common in cores, above 219 rare
    strong = field > SATURATION_KNEE
    field[strong] = SATURATION_KNEE + (254.0 - SATURATION_KNEE) * np.tanh(
        (field[strong] - SATURATION_KNEE) / SATURATION_WIDTH
    )
    return np.clip(np.round(field), 0, 254).astype(np.uint8), vil_px


def _render_ir(
    rng: np.random.Generator,
    pos_arr: np.ndarray,
    amp_arr: np.ndarray,
    cells: _Cells,
    wind: _Wind,
    ir_size: int,
    month: int,
) -> tuple[np.ndarray, np.ndarray]:
    """IR frames (T, S/2, S/2) int16, brightness temperature in degC x 100: (ir069, ir107).

    A broad anvil over the cores on the half-resolution grid, over a seasonal surface.
    """
    ir_coords = (np.arange(ir_size) + 0.5) * (PATCH_KM / ir_size)
    anvil = _render(pos_arr, amp_arr, cells, ir_coords, 2.2, 0.0) / np.float32(254.0)
    anvil *= _Texture.draw(rng, wind.base, n_modes=4).grid(ir_coords)
    seasonal = 12.0 - 10.0 * np.cos(2.0 * np.pi * (month - 1) / 12.0)  # warm in summer
    gradient = rng.normal(0.0, 2.0) * (ir_coords[None, :] - PATCH_KM / 2) / PATCH_KM
    surface107 = (seasonal + gradient + 2.0 * (ir_coords[:, None] - PATCH_KM / 2) / PATCH_KM)[
        None
    ] + rng.normal(0.0, 0.3, size=(N_FRAMES, ir_size, ir_size))
    surface069 = -32.0 + 0.3 * (surface107 - seasonal)
    ir107 = _brightness_temperature(anvil, surface107, -68.0)
    ir069 = _brightness_temperature(anvil, surface069, -70.0)
    return ir069, ir107


def _cut_missing_corner(vil_tyx: np.ndarray, missing_fraction: float) -> None:
    """Set a corner triangle, ``missing_fraction`` of the (T, S, S) patch, to 255 in place."""
    image_size = vil_tyx.shape[1]
    rows, cols = np.mgrid[0:image_size, 0:image_size]
    cut = np.sqrt(2.0 * missing_fraction) * image_size
    vil_tyx[:, (rows + cols) < cut] = VIL_MISSING


def _lightning(
    rng: np.random.Generator, vil_tyx: np.ndarray, pixel_km: float, grid: int
) -> np.ndarray:
    """Flashes ``[t, x, y]`` from VIL >= 133: Poisson counts per pixel, denser in cores."""
    factor = vil_tyx.shape[1] / grid  # VIL pixels per lightning pixel (8)
    out: list[np.ndarray] = []
    for k in range(N_FRAMES):
        frame = vil_tyx[k].astype(np.float64)
        ys, xs = np.nonzero(frame >= LIGHTNING_VIL)
        if ys.size == 0:
            continue
        strength = ((frame[ys, xs] - LIGHTNING_VIL) / (254.0 - LIGHTNING_VIL)) ** 1.5
        counts = rng.poisson(FLASH_RATE_KM2 * pixel_km**2 * strength)
        total = int(counts.sum())
        if total == 0:
            continue
        fy = np.repeat(ys, counts) + rng.random(total)
        fx = np.repeat(xs, counts) + rng.random(total)
        start = np.full(total, (-120.0 + FRAME_MINUTES * k) * 60.0)
        if k == 0:
            # the archive also holds flashes a little before -120 min; they bin into frame 0
            start -= 60.0 * FRAME_MINUTES * rng.random(total).round()
        t = start + rng.random(total) * FRAME_MINUTES * 60.0
        out.append(np.stack([t, fx / factor, fy / factor], axis=1))
    if not out:
        return np.zeros((0, 3), dtype=np.float64)
    return np.concatenate(out, axis=0)
