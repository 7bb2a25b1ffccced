"""Two-level k-means: many coarse centroids for a fraction of a flat k-means' cost.

A flat k-means of ``k`` centroids costs ``k`` distances a training point and iteration: for
the 8,192 lists of a 1M-reference IVF (320,000 points of 1,280-d) that is tens of minutes on 2
cores, for the 262,144 lists of a 1M-logo descriptor store hours. Clustering the sample into
~sqrt(k) groups first, then each group into its share of ``k``, costs ~2 sqrt(k) distances
(faiss's ``contrib.clustering.two_level_clustering``; this version returns exactly ``k``
centroids: a group gets at least one and at most its points).
"""

from __future__ import annotations

import numpy as np

KMEANS_ITERATIONS = 10  # coarse cells for an inverted file, not optimal ones
# Full k-means iterations over the two-level centroids. On the 100k scale library (IVF4096 on
# 160,000 effnet vectors, the scorer's 48 recorded searches, nprobe 128) the exact nearest
# reference was among the 30 fetched for 46-48 searches with two levels alone, 48 with these
# iterations, 47-48 with faiss's flat k-means; training 8-17 s, 28-40 s, 103 s (docs/scale.md).
REFINE_ITERATIONS = 2


def two_level_centroids(sample: np.ndarray, k: int, *, spherical: bool = False,
                        iterations: int = KMEANS_ITERATIONS, refine: int = REFINE_ITERATIONS,
                        seed: int = 1) -> np.ndarray:
    """Exactly ``k`` centroids of ``sample`` (``(n, d)`` float32, n >= k).

    Args:
        spherical: Unit-norm centroids, points assigned by inner product (an inner-product IVF).
        refine: Full k-means iterations started from the two-level centroids (on at most 256
            points a centroid): they even out the cells the groups' borders cut.

    Raises:
        ValueError: Fewer points than centroids.
    """
    import faiss

    x = np.ascontiguousarray(sample, dtype=np.float32)
    if k < 1 or len(x) < k:
        raise ValueError(f"two-level k-means: {len(x)} points cannot make {k} centroids")
    dim = x.shape[1]
    groups = min(len(x), max(2, int(round(np.sqrt(k)))))
    coarse = faiss.Kmeans(dim, groups, niter=iterations, max_points_per_centroid=2000, spherical=spherical, seed=seed)
    coarse.train(x)
    _, assigned = coarse.index.search(x, 1)
    assigned = assigned.ravel()
    shares = allocate(np.bincount(assigned, minlength=groups), k)
    centroids = []
    for group in np.flatnonzero(shares):
        points = np.ascontiguousarray(x[assigned == group])
        if shares[group] == len(points):
            centroids.append(points)
            continue
        fine = faiss.Kmeans(dim, int(shares[group]), niter=iterations, min_points_per_centroid=1,
                            max_points_per_centroid=256, spherical=spherical, seed=seed)
        fine.train(points)
        centroids.append(fine.centroids)
    start = np.ascontiguousarray(np.concatenate(centroids), dtype=np.float32)
    if refine < 1:
        return start
    full = faiss.Kmeans(dim, k, niter=refine, min_points_per_centroid=1, max_points_per_centroid=256,
                        spherical=spherical, seed=seed)
    full.train(x, init_centroids=start)
    return np.ascontiguousarray(full.centroids, dtype=np.float32)


def allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """``k`` centroids shared among groups of ``sizes`` points, in proportion (largest
    remainders), none more than its points, and every non-empty group at least one while
    there are as many centroids as non-empty groups."""
    sizes = np.asarray(sizes, dtype=np.int64)
    quota = sizes / max(int(sizes.sum()), 1) * k
    shares = np.minimum(sizes, np.maximum(np.floor(quota), (sizes > 0).astype(float))).astype(np.int64)
    while shares.sum() < k:  # the largest remainders first, where a group has points to spare
        room = shares < sizes
        order = np.argsort(-(quota - shares) * room, kind="stable")
        give = order[: int(min(k - shares.sum(), room.sum()))]
        shares[give] += 1
    while shares.sum() > k:  # the minimum of one a group overshot: take from the most over quota
        keep = 1 if (shares > 1).any() else 0  # fewer centroids than groups: some get none
        over = np.flatnonzero(shares > keep)
        take = over[np.argsort(-(shares[over] - quota[over]), kind="stable")][: int(shares.sum() - k)]
        shares[take] -= 1
    return shares
