"""Iterative stratification of a train / held-out split over images that each hold a SET of classes.

    train, held_out = stratified_split(present, n_eval=2, seed=0)   # present: (images, classes) bool

The algorithm is Sechidis, Tsoumakas and Vlahavas, "On the Stratification of Multi-Label Data" (ECML PKDD
2011, Algorithm 1), as scikit-multilearn's `IterativeStratification` implements it, for two folds:

1. Each fold wants its share of every class's images (`desired[fold, class]`) and of all images.
2. Take the class with the fewest images still unassigned (ties: a random one), and give each of its unassigned
   images, one by one, to the fold that wants that class most (ties: the fold that wants the most images, then
   a random one). An image counts for every class it holds.
3. Repeat until every image holding a class is assigned; images holding none fill what is left.

Two changes, both for a held-out split rather than k-fold cross-validation:

- Every class in at least `min_images` images wants at least one held-out image (its share would round to
  none for a rare class at a small `val_ratio`: 3 images x 0.1). Rare classes come first (step 2), while the
  held-out side still has room, so each such class is validated whenever the held-out size allows it.
- A fold that holds its number of images takes no more, so the held-out side has exactly `n_eval` images
  (the paper's folds may over- or undershoot).

Randomness: one `numpy.random.default_rng(seed)` (PCG64) draws the order images are visited in, then each
tie; the same seed and class sets give the same split.
"""

from __future__ import annotations

import numpy as np

TRAIN, EVAL = 0, 1
MIN_IMAGES = 3  # a class in at least this many images is held out at least once


def stratified_split(
    present: np.ndarray, n_eval: int, seed: int, min_images: int = MIN_IMAGES
) -> tuple[list[int], list[int]]:
    """Indices (train, eval), each in ascending order, of a split of `present`'s rows (images; columns: classes).

    Raises:
        ValueError: `n_eval` is not in [0, number of images].
    """
    n = len(present)
    if not 0 <= n_eval <= n:
        raise ValueError(f"n_eval: expected 0..{n}, found {n_eval}")
    rng = np.random.default_rng(seed)
    holds = present.astype(np.float64)  # (N, C)
    capacity = np.array([n - n_eval, n_eval])
    desired = _desired(holds.sum(0), n_eval / n if n else 0.0, min_images)  # (2, C)
    fold = np.full(n, -1)
    order = rng.permutation(n)  # the seed's say in which of equally placed images goes where
    remaining = holds.sum(0)  # (C,) unassigned images per class
    while remaining.any():
        label = _rarest(remaining, rng)
        for i in order[(holds[order, label] > 0) & (fold[order] < 0)]:
            chosen = _choose(desired[:, label], capacity, rng)
            fold[i] = chosen
            capacity[chosen] -= 1
            desired[chosen] -= holds[i]
            remaining -= holds[i]
    classless = order[fold[order] < 0]
    fold[classless[: capacity[EVAL]]] = EVAL
    fold[classless[capacity[EVAL] :]] = TRAIN
    return np.flatnonzero(fold == TRAIN).tolist(), np.flatnonzero(fold == EVAL).tolist()


def _desired(per_class: np.ndarray, eval_share: float, min_images: int) -> np.ndarray:
    """(2, C) images of each class each fold wants: its share, and at least one held-out image for a class in
    `min_images` or more."""
    held_out = per_class * eval_share
    held_out = np.where(per_class >= min_images, np.maximum(held_out, 1.0), held_out)
    return np.stack([per_class - held_out, held_out])


def _rarest(remaining: np.ndarray, rng: np.random.Generator) -> int:
    """The class with the fewest unassigned images (at least one); a random one of those tied."""
    fewest = remaining[remaining > 0].min()
    return int(rng.choice(np.flatnonzero(remaining == fewest)))


def _choose(wants: np.ndarray, capacity: np.ndarray, rng: np.random.Generator) -> int:
    """The fold, among those with room, that wants the class most; then the one with most room; then random."""
    score = np.where(capacity > 0, wants, -np.inf)
    best = np.flatnonzero(score == score.max())
    best = best[capacity[best] == capacity[best].max()]
    return int(best[0]) if len(best) == 1 else int(rng.choice(best))
