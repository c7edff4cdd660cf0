"""READ's "similarity as points" (SasP): point prompts for SAM from a query's similarity map.

Qian et al., "Reasoning to Attend: Try to Understand How <SEG> Token Works", CVPR 2025; the
steps below follow ``similarity_map_to_points`` of the reference code (rui-qian/READ,
``model/READ.py``), with the settings of its 7B model as defaults:

1. the similarity of the query with every patch token, on the patch grid ``(h, w)``;
2. bilinear down-sampling by ``down_sample`` (2) to ``(h // 2, w // 2)`` (``align_corners=False``,
   no antialiasing), to smooth the map, then min-max normalisation to [0, 1];
3. padding back: where the grid covers only part of the image (LLaVA sees a centre crop),
   whole cells of value -1 are added on each side (:meth:`GridPlacement.padding_cells`), so
   the padded grid spans the image; -1 is below every threshold, so padding never becomes a
   point;
4. positives: cells ``>= t_pos`` (0.8), highest first; negatives: cells in ``[0, t_neg]``
   (0.2), lowest first; neutral: the cells in between, in row-major order (label -1);
   concatenated ``[positives, negatives, neutral]`` and cut to ``num_points`` (30). Sorting is
   stable, so equal values keep row-major order (the reference's ``argsort`` leaves ties
   unspecified);
5. each cell becomes the pixel index ``floor(min((col + 0.5) * W / w_p, W - 1))`` (rows alike),
   ``w_p`` the padded grid width, i.e. the centre of the cell on the image, clamped inside it
   (computed in float64; READ's float32 product can only differ within rounding of an integer);
6. discrete to continuous: the full-resolution map ``S`` (the min-max normalised patch map, not
   down-sampled, spread over the image with zeros outside the covered rectangle,
   :meth:`GridPlacement.to_image`) gives each point the weighted mean of pixel indices with
   weights ``exp(-d^2) * softmax(S)`` (``d`` the distance to the point in pixels, softmax over
   the whole image at temperature 1). The softmax's normaliser cancels, so the weights are
   ``exp(S - d^2)`` normalised over a window of ``refine_radius`` pixels around the point:
   with the default 10, every pixel outside has ``exp(-d^2) <= exp(-121)``, which is exactly
   0 in float32 where the reference computes it, so the window changes nothing.

Coordinates: the reference works in pixel indices (pixel ``i``'s centre at ``i``; SAM's prompt
encoder adds the half pixel itself). :class:`~ovseg.structures.PointPrompts` puts pixel centres at
``i + 0.5``, so 0.5 is added to the result.

Two behaviours (``compat``):

* ``"ovseg"`` (default): the steps above, with the arithmetic READ means. The padding cells are
  whole cells computed exactly (:meth:`GridPlacement.padding_cells`), the cell-to-pixel mapping
  is computed in float64, ties sort stably, and the refinement reads ovseg's one-resize map
  (:meth:`GridPlacement.to_image`) in float64 inside ``refine_radius``. Any placement works.
* ``"read"``: READ's ``similarity_map_to_points`` operation for operation
  (:func:`read_center_padding`, :func:`read_cell_pixels`, :func:`read_full_map`,
  :func:`read_refine`), float rounding included, to reproduce its points exactly (e.g. to
  compare with published numbers); the grid must be the centred
  square of the image (LLaVA's centre crop: ``region="center_crop"``, or a whole square
  image), the only geometry READ's code knows. Its rounding departs from the intended
  geometry in two places. (a) READ pads with ``pad = (int(S * (g / S)) - g) // 2`` in Python
  floats (``g`` the down-sampled grid side, ``S`` an image side); on the short side ``s``,
  ``s * (g / s)`` rounds to just below ``g`` for some sizes (84 short sides in 32..2048 for
  ``g = 12``, e.g. 94, 294, 307, 376, 535, 588), so ``pad = -1``: one grid row or column is
  cropped from both ends and the remaining cells are spread over the whole side, which moves
  every point. The full-resolution map has the same quirk with 336 (35 short sides in
  32..2048, e.g. 79, 158, 316). (b) The cell centre ``(col + 0.5) * (W / w_p)`` is a float32
  product, which rounds just below an integer for some sizes and gives a pixel one lower
  (the clamp to ``W - 1`` is float32 too). Elsewhere READ's code also differs in ways
  reproduced here: ``argsort`` without ``stable`` (ties in the order the sort gives), the
  full-resolution map made as READ makes it (to 336 x 336, zero padding, to the image
  size), and the refinement over the whole image in float32. Not reproduced: READ's map
  arrives in the LLM's dtype (often bfloat16); the selector takes it as float32. A constant
  map, where READ divides 0 by 0 and then fails, normalises to zeros as in ``"ovseg"``.
  ``refine=False`` stops before READ's (always applied) refinement; ``refine_radius`` is
  unused. Coordinates are READ's plus the half pixel, stored as float32 by
  :class:`~ovseg.structures.PointPrompts` (just below a power of two the sum rounds by at
  most one float32 ulp, 2.4e-4 px at 2048).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.errors import ConfigError
from ovseg.models.prompts.similarity import GridPlacement, min_max_normalize
from ovseg.registry import POINT_SELECTORS
from ovseg.structures import PointPrompts

__all__ = [
    "SasPSelector",
    "order_cells",
    "read_cell_pixels",
    "read_center_padding",
    "read_full_map",
    "read_refine",
    "refine_points",
]

PAD_VALUE = -1.0
COMPAT_MODES = ("ovseg", "read")
READ_CROP_SIZE = 336  # READ's full-resolution map goes through LLaVA's 336 x 336 crop


def order_cells(
    values: torch.Tensor, num_points: int, t_pos: float, t_neg: float, *, stable: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """SasP's ordering of flattened grid cells (step 4 of the module docstring).

    Args:
        values: ``(N,)`` cell values, normalised to [0, 1]; padding cells hold -1.
        num_points: how many cells to keep.
        t_pos, t_neg: the positive (``>=``) and negative (``<=``) thresholds.
        stable: sort stably (ties in row-major order); ``False`` is READ's plain ``argsort``.

    Returns:
        ``indices`` ``(P,)`` int64 flat cell indices and ``labels`` ``(P,)`` int64 (1 / 0 / -1),
        ``P = min(num_points, number of non-padding cells)``.
    """
    values = values.reshape(-1)
    pos = torch.nonzero(values >= t_pos).flatten()
    pos = pos[torch.argsort(values[pos], descending=True, stable=stable)]
    neg = torch.nonzero((values >= 0) & (values <= t_neg)).flatten()
    neg = neg[torch.argsort(values[neg], stable=stable)]
    neutral = torch.nonzero((values > t_neg) & (values < t_pos)).flatten()
    indices = torch.cat([pos, neg, neutral])[:num_points]
    labels = torch.cat(
        [
            torch.ones(len(pos), dtype=torch.int64),
            torch.zeros(len(neg), dtype=torch.int64),
            torch.full((len(neutral),), -1, dtype=torch.int64),
        ]
    )[:num_points]
    return indices, labels


def refine_points(full_map: torch.Tensor, points: np.ndarray, radius: int = 10) -> np.ndarray:
    """Discrete to continuous (step 6): softmax-weighted mean of the pixel indices near each point.

    Args:
        full_map: ``(H, W)`` similarity on the image, in [0, 1].
        points: ``(P, 2)`` integer pixel indices ``(x, y)``.
        radius: half-size of the square window summed over (10 reproduces the whole-image sum).

    Returns:
        ``(P, 2)`` float64 continuous coordinates in pixel-index units (pixel ``i`` at ``i``).
    """
    sim = full_map.detach().to("cpu", torch.float64).numpy()
    height, width = sim.shape
    out = np.zeros((len(points), 2), dtype=np.float64)
    for n, (px, py) in enumerate(np.asarray(points, dtype=np.int64).reshape(-1, 2)):
        x_lo, x_hi = max(px - radius, 0), min(px + radius + 1, width)
        y_lo, y_hi = max(py - radius, 0), min(py + radius + 1, height)
        xs = np.arange(x_lo, x_hi, dtype=np.float64)
        ys = np.arange(y_lo, y_hi, dtype=np.float64)
        log_w = sim[y_lo:y_hi, x_lo:x_hi] - ((xs[None, :] - px) ** 2 + (ys[:, None] - py) ** 2)
        weights = np.exp(log_w - log_w.max())
        weights /= weights.sum()
        out[n] = (weights.sum(0) @ xs, weights.sum(1) @ ys)
    return out


def read_center_padding(height: int, width: int, side: int) -> tuple[int, int]:
    """READ's padding ``(pad_h, pad_w)`` of a ``side x side`` map centred on an ``H x W`` image.

    ``(int(S * (side / min(H, W))) - side) // 2`` for each image side ``S``, in Python floats as
    the reference computes it: where ``s * (side / s)`` rounds below ``side`` on the short side
    ``s``, the result is -1 (``F.pad`` then crops a row or column at both ends).
    """
    scale = side / min(height, width)
    return (int(height * scale) - side) // 2, (int(width * scale) - side) // 2


def read_full_map(similarity: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """READ's full-resolution map (its ``get_similarity_map``) -> ``(H, W)`` float32.

    The ``(s, s)`` map min-max normalised, resized bilinearly to 336 x 336, padded with zeros by
    :func:`read_center_padding` (to the image's aspect at 336 px on the short side), resized
    bilinearly to the image size.
    """
    height, width = image_size
    full = min_max_normalize(similarity)[None, None]
    full = F.interpolate(
        full, size=(READ_CROP_SIZE, READ_CROP_SIZE), mode="bilinear", align_corners=False
    )
    pad_h, pad_w = read_center_padding(height, width, READ_CROP_SIZE)
    full = F.pad(full, (pad_w, pad_w, pad_h, pad_h))
    return F.interpolate(full, size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def read_cell_pixels(
    indices: torch.Tensor, grid_size: tuple[int, int], image_size: tuple[int, int]
) -> torch.Tensor:
    """READ's cell-to-pixel mapping: flat cell indices ``(P,)`` -> ``(P, 2)`` int64 ``(x, y)``.

    ``int(min((col + 0.5) * (W / w_p), W - 1))`` with the index arithmetic on int64 tensors, so
    the sum, the product (with the Python-float scale) and the clamp are float32, as in READ.
    """
    grid_h, grid_w = grid_size
    height, width = image_size
    scale_h, scale_w = float(height) / grid_h, float(width) / grid_w
    bound_w = torch.tensor(width - 1, dtype=torch.float32)
    bound_h = torch.tensor(height - 1, dtype=torch.float32)
    xs = torch.minimum((indices % grid_w + 0.5) * scale_w, bound_w)
    ys = torch.minimum((indices // grid_w + 0.5) * scale_h, bound_h)
    return torch.stack([xs, ys], dim=1).to(torch.int64)


def read_refine(full_map: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """READ's discrete to continuous step over the whole image, in float32.

    Args:
        full_map: ``(H, W)`` float32 map (:func:`read_full_map`).
        pixels: ``(P, 2)`` int64 pixel indices ``(x, y)``.

    Returns:
        ``(P, 2)`` float32 in pixel-index units: each point's mean of pixel indices weighted by
        ``exp(-d^2) * softmax(map)``, with READ's operations in READ's order.
    """
    height, width = full_map.shape
    probs = F.softmax(full_map.reshape(-1), dim=0)
    grid_x, grid_y = torch.meshgrid(torch.arange(width), torch.arange(height), indexing="xy")
    grid_x, grid_y = grid_x.float().reshape(-1), grid_y.float().reshape(-1)
    out = []
    for x, y in zip(pixels[:, 0], pixels[:, 1]):
        weights = torch.exp(-((grid_x - x) ** 2 + (grid_y - y) ** 2)) * probs
        weights = weights / weights.sum()
        out.append(torch.stack([(grid_x * weights).sum(), (grid_y * weights).sum()]))
    return torch.stack(out) if out else torch.zeros(0, 2)


@POINT_SELECTORS.register()
class SasPSelector:
    """READ's similarity-as-points selector (see the module docstring for every step).

    Args:
        num_points: points kept (READ-7B: 30; READ-13B: 60).
        t_pos: positive threshold (READ-7B: 0.8; READ-13B: 0.6).
        t_neg: negative threshold (0.2).
        down_sample: grid down-sampling factor before thresholding (READ-7B: 2; READ-13B: 1).
        refine: move each point to the softmax-weighted mean of nearby pixels (discrete to
            continuous); ``False`` keeps the centre of the selected pixel.
        refine_radius: window half-size of the refinement in pixels (``compat="ovseg"``).
        compat: ``"ovseg"`` (default) or ``"read"``, READ's code with its float rounding; the
            module docstring says where they differ and why.
    """

    def __init__(
        self,
        num_points: int = 30,
        t_pos: float = 0.8,
        t_neg: float = 0.2,
        down_sample: int = 2,
        refine: bool = True,
        refine_radius: int = 10,
        compat: str = "ovseg",
    ) -> None:
        if not 0.0 <= t_neg < t_pos <= 1.0:
            raise ConfigError(
                f"SasP needs 0 <= t_neg < t_pos <= 1, got t_neg={t_neg}, t_pos={t_pos}."
            )
        if int(num_points) < 1 or int(down_sample) < 1 or int(refine_radius) < 0:
            raise ConfigError(
                "num_points and down_sample must be at least 1 and refine_radius at least 0, got "
                f"{num_points}, {down_sample}, {refine_radius}."
            )
        self.num_points = int(num_points)
        self.t_pos = float(t_pos)
        self.t_neg = float(t_neg)
        self.down_sample = int(down_sample)
        self.refine = bool(refine)
        self.refine_radius = int(refine_radius)
        if compat not in COMPAT_MODES:
            raise ConfigError(
                f"compat must be 'ovseg' (default) or 'read' (READ's code exactly), not {compat!r}."
            )
        self.compat = compat

    def padded_grid(self, similarity: torch.Tensor, placement: GridPlacement) -> torch.Tensor:
        """Steps 2-3: the down-sampled, normalised grid padded with -1 to span the image.

        With ``compat="read"`` the padding is READ's (:func:`read_center_padding`, possibly -1,
        which crops); the grid must be square and centred on the image.
        """
        if self.compat == "read":
            self._check_read_geometry(similarity, placement)
        small = self._down_sampled(similarity)
        if self.compat == "read":
            pad_h, pad_w = read_center_padding(*placement.image_size, small.shape[0])
            if min(small.shape) + 2 * min(pad_h, pad_w) < 1:
                raise ConfigError(
                    f"READ's padding crops the whole {tuple(small.shape)} grid on a "
                    f"{placement.image_size} image; lower down_sample or use compat 'ovseg'."
                )
            top, bottom, left, right = pad_h, pad_h, pad_w, pad_w
        else:
            top, bottom, left, right = placement.padding_cells(*small.shape)
        return F.pad(small, (left, right, top, bottom), mode="constant", value=PAD_VALUE)

    def _down_sampled(self, similarity: torch.Tensor) -> torch.Tensor:
        grid_h, grid_w = similarity.shape
        small_h, small_w = grid_h // self.down_sample, grid_w // self.down_sample
        if small_h < 1 or small_w < 1:
            raise ConfigError(
                f"A {grid_h}x{grid_w} similarity grid is too small for down_sample="
                f"{self.down_sample}; lower down_sample or use a larger input."
            )
        small = F.interpolate(
            similarity.float()[None, None],
            size=(small_h, small_w),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        return min_max_normalize(small)

    @staticmethod
    def _check_read_geometry(similarity: torch.Tensor, placement: GridPlacement) -> None:
        height, width = placement.image_size
        if similarity.shape[0] != similarity.shape[1]:
            raise ConfigError(
                f"compat 'read' takes a square similarity grid, as READ's code does; got "
                f"{tuple(similarity.shape)}. Use compat 'ovseg' for other grids."
            )
        centred = GridPlacement.center_crop(height, width).region
        if placement.region != centred and not (placement.region is None and height == width):
            raise ConfigError(
                f"compat 'read' reproduces READ's code, which assumes the grid covers the "
                f"centred square of the image (region='center_crop'); this grid covers "
                f"{placement.bounds}. Use compat 'ovseg' for other placements."
            )

    def __call__(
        self, similarity: torch.Tensor | np.ndarray, placement: GridPlacement
    ) -> PointPrompts:
        """Points for SAM from a patch-grid similarity map.

        Args:
            similarity: ``(h, w)`` raw query-to-token similarity on the patch grid (any scale;
                it is min-max normalised here).
            placement: where the grid lies on the input image.

        Returns:
            :class:`PointPrompts`: ``(P, 2)`` ``(x, y)`` input-image pixels (centres at
            ``i + 0.5``) and labels 1 / 0 / -1 in the order positives, negatives, neutral.
        """
        similarity = torch.as_tensor(similarity).detach().float().cpu()
        if similarity.ndim != 2:
            raise ConfigError(f"similarity must be (h, w), got shape {tuple(similarity.shape)}.")
        if self.compat == "read":
            return self._read_points(similarity, placement)
        height, width = placement.image_size
        padded = self.padded_grid(similarity, placement)
        padded_h, padded_w = padded.shape
        indices, labels = order_cells(padded, self.num_points, self.t_pos, self.t_neg)
        rows, cols = (indices // padded_w).numpy(), (indices % padded_w).numpy()
        px = np.floor(np.minimum((cols + 0.5) * (width / padded_w), width - 1))
        py = np.floor(np.minimum((rows + 0.5) * (height / padded_h), height - 1))
        pixels = np.stack([px, py], axis=1).astype(np.int64)
        if self.refine and len(pixels):
            full = placement.to_image(min_max_normalize(similarity))
            coords = refine_points(full, pixels, self.refine_radius)
        else:
            coords = pixels.astype(np.float64)
        return PointPrompts(coords + 0.5, labels.numpy())

    def _read_points(self, similarity: torch.Tensor, placement: GridPlacement) -> PointPrompts:
        """``compat="read"``: READ's ``similarity_map_to_points`` (module docstring)."""
        padded = self.padded_grid(similarity, placement)
        indices, labels = order_cells(padded, self.num_points, self.t_pos, self.t_neg, stable=False)
        pixels = read_cell_pixels(indices, tuple(padded.shape), placement.image_size)
        if self.refine and len(pixels):
            coords = read_refine(read_full_map(similarity, placement.image_size), pixels)
        else:
            coords = pixels
        return PointPrompts(coords.numpy().astype(np.float64) + 0.5, labels.numpy())

    select = __call__
