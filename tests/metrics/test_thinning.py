"""Morphological thinning (MATLAB bwmorph 'thin') against a naive per-pixel transcription."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from pag_model.metrics.thinning import thin


def naive_thin(image: np.ndarray) -> np.ndarray:
    """Lam, Lee & Suen (1992) p. 879, written out pixel by pixel from the paper's conditions."""
    img = image.astype(bool).copy()
    h, w = img.shape

    def px(y: int, x: int) -> bool:
        return 0 <= y < h and 0 <= x < w and bool(img[y, x])

    def neighbours(y: int, x: int) -> list[bool]:
        # x1..x8 counter-clockwise from east; returned with x[0] unused so x[1] is x1.
        ring = [px(y, x + 1), px(y - 1, x + 1), px(y - 1, x), px(y - 1, x - 1),
                px(y, x - 1), px(y + 1, x - 1), px(y + 1, x), px(y + 1, x + 1)]
        return [False] + ring + [ring[0]]  # x[9] = x1

    while True:
        changed = False
        for sub in (1, 2):
            delete = []
            for y in range(h):
                for x in range(w):
                    if not img[y, x]:
                        continue
                    n = neighbours(y, x)
                    xh = sum(1 for i in range(1, 5) if not n[2 * i - 1] and (n[2 * i] or n[2 * i + 1]))
                    n1 = sum(1 for k in range(1, 5) if n[2 * k - 1] or n[2 * k])
                    n2 = sum(1 for k in range(1, 5) if n[2 * k] or n[2 * k + 1])
                    if sub == 1:
                        g3 = not ((n[2] or n[3] or not n[8]) and n[1])
                    else:
                        g3 = not ((n[6] or n[7] or not n[4]) and n[5])
                    if xh == 1 and 2 <= min(n1, n2) <= 3 and g3:
                        delete.append((y, x))
            for y, x in delete:
                img[y, x] = False
            changed = changed or bool(delete)
        if not changed:
            return img


@pytest.mark.parametrize("seed", range(8))
def test_thin_matches_the_naive_algorithm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 24, size=2)
    image = rng.random((h, w)) < rng.uniform(0.2, 0.7)
    if seed % 2:
        image = binary_dilation(image, iterations=2)
    np.testing.assert_array_equal(thin(image), naive_thin(image))


def test_thick_bar_becomes_a_one_pixel_line() -> None:
    image = np.zeros((9, 20), dtype=bool)
    image[3:6, 2:18] = True
    out = thin(image)
    # Every column of the bar keeps exactly one pixel (one-pixel-wide, still connected).
    columns = out[:, 3:17].sum(axis=0)
    assert (columns == 1).all()
    assert out.sum() < image.sum() / 2


def test_one_pixel_lines_and_isolated_pixels_are_kept() -> None:
    image = np.zeros((20, 20), dtype=bool)
    image[5, 2:15] = True          # horizontal line, endpoints included
    image[8:18, 10] = True         # vertical line
    image[1, 18] = True            # isolated pixel
    np.fill_diagonal(image[10:18, 0:8], True)  # diagonal line
    np.testing.assert_array_equal(thin(image), image)


def test_accepts_zero_one_maps_and_rejects_wrong_rank() -> None:
    image = np.zeros((6, 6), dtype=np.uint8)
    image[2, 1:5] = 1
    np.testing.assert_array_equal(thin(image), image.astype(bool))
    with pytest.raises(ValueError, match="H, W"):
        thin(np.zeros((2, 3, 4)))
