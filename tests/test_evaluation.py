"""Tests of pipeline.evaluation: kNN backends, Recall@N, descriptor extraction, evaluate/save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.transforms import normalize
from pipeline.evaluation import (EvaluationResult, evaluate, extract_descriptors, knn_search,
                                 per_query_hits, recall_at_n)
from pipeline.evaluation.knn import faiss_gpu_available


# --------------------------------------------------------------------------- helpers


class TensorSplit(torch.utils.data.Dataset):
    """Stand-in evaluation split over in-memory images, with the EvalDataset interface."""

    def __init__(self, database: torch.Tensor, queries: torch.Tensor, positives: list[np.ndarray],
                 root: Path = Path("/data/toy/test"), name: str = "toy/test") -> None:
        self.images = torch.cat([database, queries])
        self.num_database, self.num_queries = len(database), len(queries)
        self.positives = [np.asarray(p, dtype=np.int64) for p in positives]
        self.database_paths = [root / "database" / f"db_{i:03d}.jpg" for i in range(len(database))]
        self.query_paths = [root / "queries" / f"q_{i:03d}.jpg" for i in range(len(queries))]
        self.name = name

    def __len__(self) -> int:
        return self.num_database + self.num_queries

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i

    def __repr__(self) -> str:
        return f"TensorSplit({self.name}: {self.num_database} database, {self.num_queries} queries)"


class TinyNet(nn.Module):
    """Conv + GeM-free average pooling + L2 normalisation: a real, small descriptor model."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, dim, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(dim)  # makes train/eval mode observable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return F.normalize(x.mean(dim=(2, 3)), dim=1)


class Identity(nn.Module):
    """Descriptor = the L2-normalised image itself (so rankings are set by the test data)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.flatten(1), dim=1)


def reference_knn(db: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force by the documented definition: float64 scores rounded to float32, (-score, index)."""
    s = (q.astype(np.float64) @ db.astype(np.float64).T).astype(np.float32)
    order = np.lexsort((np.broadcast_to(np.arange(db.shape[0]), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# On a GPU machine: "auto" on CUDA tensors, and each GPU backend explicitly (faiss-gpu when installed).
CUDA_BACKENDS = {"cuda": "auto", "cuda-torch": "torch", "cuda-faiss": "faiss"}
BACKENDS = ["faiss", "torch"] + (["cuda", "cuda-torch"] if torch.cuda.is_available() else []) \
    + (["cuda-faiss"] if faiss_gpu_available() else [])


def search(db: np.ndarray, q: np.ndarray, k: int, backend: str) -> tuple[np.ndarray, np.ndarray]:
    if backend in CUDA_BACKENDS:
        return knn_search(torch.from_numpy(db).cuda(), torch.from_numpy(q).cuda(), k,
                          backend=CUDA_BACKENDS[backend])
    return knn_search(db, q, k, backend=backend)


# --------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_random_matches_brute_force(backend: str) -> None:
    rng = np.random.default_rng(0)
    db, q = unit(rng, 5000, 64), unit(rng, 200, 64)
    scores, idx = search(db, q, 20, backend)
    ref_scores, ref_idx = reference_knn(db, q, 20)
    assert idx.shape == (200, 20) and idx.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(scores, ref_scores)
    # No exact ties in random data, so this is also the plain float64 ranking.
    np.testing.assert_array_equal(idx, np.argsort(-(q.astype(np.float64) @ db.T.astype(np.float64)),
                                                   axis=1, kind="stable")[:, :20])


def test_knn_backends_identical_on_ties() -> None:
    rng = np.random.default_rng(1)
    # Small integer vectors: inner products are exact and ties are everywhere.
    db = rng.integers(0, 3, (3000, 8)).astype(np.float32)
    q = rng.integers(0, 3, (60, 8)).astype(np.float32)
    results = [search(db, q, 25, b) for b in BACKENDS]
    ref_scores, ref_idx = reference_knn(db, q, 25)
    for scores, idx in results:
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_tie_group_larger_than_candidate_list(backend: str) -> None:
    # 40 identical best matches at the end of the database: faiss alone returns them in an
    # arbitrary order and subset; the canonical answer is the lowest indices.
    rng = np.random.default_rng(2)
    db = unit(rng, 100, 16) * 0.1
    best = unit(rng, 1, 16)
    db[60:] = best
    q = best.copy()
    scores, idx = search(db, q, 5, backend)
    np.testing.assert_array_equal(idx, [[60, 61, 62, 63, 64]])
    assert np.all(scores == scores[0, 0])


def test_knn_near_ties_below_float32_noise() -> None:
    # Rows that differ from one another by less than a float32 matmul's rounding error: the
    # backends' raw float32 orders disagree, the canonical ranking must not.
    rng = np.random.default_rng(6)
    base = unit(rng, 1, 256)
    db = np.concatenate([unit(rng, 2000, 256),
                         base + rng.standard_normal((300, 256)).astype(np.float32) * 1e-7])
    q = np.concatenate([base, unit(rng, 20, 256)])
    ref_scores, ref_idx = reference_knn(db, q, 30)
    for backend in BACKENDS:
        scores, idx = search(db, q, 30, backend)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_knn_duplicate_rows_break_ties_by_index(backend: str) -> None:
    rng = np.random.default_rng(3)
    db = unit(rng, 500, 32)
    db[[400, 7, 250]] = db[123]  # four copies of one vector
    _, idx = knn_search(db, db[123:124], 4, backend=backend)
    np.testing.assert_array_equal(idx, [[7, 123, 250, 400]])


def test_knn_accepts_tensors_and_other_float_dtypes() -> None:
    rng = np.random.default_rng(4)
    db, q = unit(rng, 300, 16), unit(rng, 10, 16)
    _, ref = knn_search(db, q, 7, backend="faiss")
    _, from_tensors = knn_search(torch.from_numpy(db), torch.from_numpy(q), 7, backend="torch")
    _, from_float64 = knn_search(db.astype(np.float64), q.astype(np.float64), 7)
    np.testing.assert_array_equal(ref, from_tensors)
    np.testing.assert_array_equal(ref, from_float64)


def test_knn_clamps_k_to_database_size() -> None:
    rng = np.random.default_rng(5)
    db, q = unit(rng, 6, 8), unit(rng, 3, 8)
    for backend in ("faiss", "torch"):
        with pytest.warns(UserWarning, match="exceeds the database size 6"):
            scores, idx = knn_search(db, q, 20, backend=backend)
        assert idx.shape == (3, 6)
        assert sorted(idx[0].tolist()) == list(range(6))


def test_knn_empty_queries() -> None:
    scores, idx = knn_search(np.eye(4, dtype=np.float32), np.zeros((0, 4), np.float32), 2)
    assert scores.shape == idx.shape == (0, 2)


def test_knn_errors() -> None:
    db = np.zeros((10, 8), np.float32)
    with pytest.raises(ValueError, match="database has dimension 8, queries have dimension 4"):
        knn_search(db, np.zeros((2, 4), np.float32), 3)
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        knn_search(db, np.zeros(8, np.float32), 3)
    with pytest.raises(TypeError, match="floating-point"):
        knn_search(db.astype(np.int64), db, 3)
    with pytest.raises(ValueError, match="not one of"):
        knn_search(db, db, 3, backend="annoy")
    with pytest.raises(ValueError, match="positive integer"):
        knn_search(db, db, 0)
    with pytest.raises(ValueError, match="empty"):
        knn_search(np.zeros((0, 8), np.float32), db, 3)
    bad = db.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_search(db, bad, 3)


# --------------------------------------------------------------------------- recall


def hand_case() -> tuple[np.ndarray, list[np.ndarray]]:
    predictions = np.array([
        [3, 1, 2, 0, 4, 5],  # positive at rank 1
        [0, 1, 2, 3, 4, 5],  # positive at rank 4
        [5, 4, 3, 2, 1, 0],  # positive at rank 6
        [0, 1, 2, 3, 4, 5],  # no positives at all: always a miss
        [0, 1, 2, 3, 4, 5],  # positives exist but none retrieved
    ])
    positives = [np.array([3, 9]), np.array([3]), np.array([0]), np.array([], dtype=np.int64),
                 np.array([7, 8])]
    return predictions, positives


def test_recall_hand_case() -> None:
    predictions, positives = hand_case()
    recalls = recall_at_n(predictions, positives, ns=(1, 2, 4, 5, 6))
    assert recalls == {1: 20.0, 2: 20.0, 4: 40.0, 5: 40.0, 6: 60.0}
    values = list(recalls.values())
    assert values == sorted(values)  # monotone in N


def test_per_query_hits() -> None:
    predictions, positives = hand_case()
    hits = per_query_hits(predictions, positives, ns=(1, 4, 6))
    assert hits.dtype == bool and hits.shape == (5, 3)
    np.testing.assert_array_equal(hits, [[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0]])


def test_recall_negative_prediction_never_hits() -> None:
    hits = per_query_hits(np.array([[-1, 2]]), [np.array([2])], ns=(1, 2))
    np.testing.assert_array_equal(hits, [[False, True]])


def test_recall_errors() -> None:
    predictions, positives = hand_case()
    with pytest.raises(ValueError, match="Recall@10 needs at least 10 predictions.*K=6"):
        recall_at_n(predictions, positives, ns=(1, 10))
    with pytest.raises(ValueError, match="4 entries but predictions has 5 queries"):
        recall_at_n(predictions, positives[:4])
    with pytest.raises(ValueError, match=r"shape \[N_q, K\]"):
        recall_at_n(predictions[0], positives)
    with pytest.raises(TypeError, match="integer"):
        recall_at_n(predictions.astype(np.float32), positives, ns=(1,))
    with pytest.raises(ValueError, match="positive integer N"):
        recall_at_n(predictions, positives, ns=(0,))


# --------------------------------------------------------------------------- descriptors


def image_split(n_db: int = 10, n_q: int = 5, size: int = 12, seed: int = 0) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_db + n_q, 3, size, size), dtype=torch.uint8, generator=g)
    positives = [np.array([i]) for i in range(n_q)]
    return TensorSplit(images[:n_db], images[n_db:], positives)


def test_extract_descriptors_matches_plain_loop() -> None:
    torch.manual_seed(0)
    model, ds = TinyNet(), image_split()
    out = extract_descriptors(model, ds, batch_size=4, progress=False)
    with torch.no_grad():
        model.eval()
        expected = torch.cat([model(normalize(ds[i][0][None])) for i in range(len(ds))])
    assert out.shape == (15, 8) and out.dtype == torch.float32
    assert not out.is_inference()  # usable in place outside inference mode
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_extract_descriptors_bf16_channels_last() -> None:
    torch.manual_seed(0)
    model, ds = TinyNet(), image_split()
    fp32 = extract_descriptors(model, ds, batch_size=6, progress=False)
    bf16 = extract_descriptors(model, ds, batch_size=6, precision="bf16", channels_last=True,
                               progress=False)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("training", [True, False])
def test_extract_descriptors_restores_training_mode(training: bool) -> None:
    model = TinyNet().train(training)
    extract_descriptors(model, image_split(), progress=False)
    assert model.training is training and model.bn.training is training


def test_extract_descriptors_errors() -> None:
    with pytest.raises(ValueError, match="precision 'fp16' is not one of"):
        extract_descriptors(TinyNet(), image_split(), precision="fp16", progress=False)

    class Shuffled(TensorSplit):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.images[i], len(self) - 1 - i

    ds = image_split()
    bad = Shuffled(ds.images[:10], ds.images[10:], ds.positives)
    with pytest.raises(ValueError, match=r"item i must be \(image, i\)"):
        extract_descriptors(TinyNet(), bad, progress=False)

    model = TinyNet().train()
    with pytest.raises(ValueError, match=r"shape \[B, D\]"):
        extract_descriptors(nn.Conv2d(3, 4, 3), image_split(), progress=False)
    assert model.training


# --------------------------------------------------------------------------- evaluate


def known_split() -> TensorSplit:
    """Database = 12 one-hot vectors; query = 4 e_a + 2 e_b + e_c, so its ranking is a, b, c,
    then every other database index in increasing order (tied at score 0)."""
    n_db = 12
    database = torch.eye(n_db).reshape(n_db, 1, 1, n_db)
    abc = [(3, 5, 7), (0, 1, 2), (4, 5, 6), (0, 1, 2), (4, 5, 6)]
    queries = torch.zeros(len(abc), n_db)
    for i, (a, b, c) in enumerate(abc):
        queries[i, a], queries[i, b], queries[i, c] = 4.0, 2.0, 1.0
    positives = [
        np.array([3]),                 # rank 1
        np.array([2]),                 # rank 3
        np.array([7, 11]),             # 4,5,6,0,1,2,3,7 -> rank 8
        np.array([], dtype=np.int64),  # no positives: a miss
        np.array([11]),                # rank 12: outside the top 10
    ]
    return TensorSplit(database, queries.reshape(len(abc), 1, 1, n_db), positives)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_evaluate_known_recall(backend: str) -> None:
    ds = known_split()
    result = evaluate(Identity(), ds, recall_at=(1, 5, 10), top_k=10, batch_size=4,
                      knn_backend=backend, preprocess=None, progress=False,
                      resize={"size": [1, 12], "interpolation": "nearest"})
    assert result.recalls == {1: 20.0, 5: 40.0, 10: 60.0}
    np.testing.assert_array_equal(result.predictions[2], [4, 5, 6, 0, 1, 2, 3, 7, 8, 9])
    assert result.predictions.shape == result.scores.shape == (5, 10)
    assert (result.num_queries, result.num_database, result.descriptor_dim) == (5, 12, 12)
    assert result.knn_backend == backend and result.dataset == "toy/test"
    assert result.images_per_second > 0 and result.seconds >= result.extraction_seconds
    assert result.query_paths[0] == "queries/q_000.jpg"
    assert result.database_paths[11] == "database/db_011.jpg"
    np.testing.assert_array_equal(result.hits(), [[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0],
                                                  [0, 0, 0]])


def test_evaluate_top_k_beyond_database_is_clamped() -> None:
    with pytest.warns(UserWarning, match="exceeds the 12 database images"):
        result = evaluate(Identity(), known_split(), recall_at=(1, 5, 20), top_k=20,
                          preprocess=None, progress=False)
    assert result.predictions.shape == (5, 12)
    assert result.recalls == {1: 20.0, 5: 40.0, 20: 80.0}  # every query with positives hits at 12+


def test_evaluate_errors_before_compute() -> None:
    ds = known_split()
    with pytest.raises(ValueError, match="top_k=5 is smaller than the largest N.*top_k >= 10"):
        evaluate(Identity(), ds, recall_at=(1, 10), top_k=5, progress=False)
    with pytest.raises(ValueError, match="knn_backend 'gpu' is not one of"):
        evaluate(Identity(), ds, knn_backend="gpu", progress=False)
    with pytest.raises(TypeError, match="JSON"):
        evaluate(Identity(), ds, resize={"size": object()}, progress=False)
    ds.positives = ds.positives[:3]
    with pytest.raises(ValueError, match="3 positive lists for 5 queries"):
        evaluate(Identity(), ds, top_k=10, progress=False)


def test_save_load_round_trip(tmp_path: Path) -> None:
    resize = {"size": [1, 12], "interpolation": "nearest"}
    result = evaluate(Identity(), known_split(), top_k=10, preprocess=None, progress=False,
                      resize=resize)
    resize["size"][0] = 99  # the recorded policy must not alias the caller's dict
    assert result.resize_policy == {"size": [1, 12], "interpolation": "nearest"}

    result.save(tmp_path / "eval")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["recalls"] == {"1": 20.0, "5": 40.0, "10": 60.0}
    assert summary["num_queries_without_positives"] == 1
    assert "predictions" not in summary
    with np.load(tmp_path / "eval" / "predictions.npz", allow_pickle=False) as arrays:
        assert arrays["hits"].shape == (5, 3)
        assert arrays["query_paths"][1] == "queries/q_001.jpg"

    loaded = EvaluationResult.load(tmp_path / "eval")
    assert loaded.to_dict() == result.to_dict()
    np.testing.assert_array_equal(loaded.predictions, result.predictions)
    np.testing.assert_array_equal(loaded.scores, result.scores)
    assert len(loaded.positives) == 5
    for a, b in zip(loaded.positives, result.positives):
        np.testing.assert_array_equal(a, b)
    assert loaded.query_paths == result.query_paths
    assert loaded.database_paths == result.database_paths
    np.testing.assert_array_equal(loaded.hits(), result.hits())


def test_evaluate_on_embedded_split(embedded_root: Path, tmp_path: Path) -> None:
    """End to end on real image files: uint8 loading, device normalisation, saved relative paths."""
    from pipeline.data.datasets import EvalDataset

    torch.manual_seed(0)
    ds = EvalDataset(embedded_root / "sf_xs" / "val", image_size=(32, 32))
    result = evaluate(TinyNet(), ds, recall_at=(1, 5), top_k=5, batch_size=16, progress=False)
    assert result.resize_policy == {"size": [32, 32], "interpolation": "bilinear"}
    assert result.num_queries == ds.num_queries and result.num_database == ds.num_database
    assert all(0.0 <= r <= 100.0 for r in result.recalls.values())
    assert result.recalls[1] <= result.recalls[5]
    assert result.database_paths[0].startswith("database/")
    assert result.query_paths[0].startswith("queries/")
    loaded = EvaluationResult.load(result.save(tmp_path / "val"))
    assert loaded.to_dict() == result.to_dict()
