from __future__ import annotations

import random

import cv2
import faiss
import numpy as np
import pytest

from pimmi import index as idx
from pimmi.demo import ORIGINALS, jpeg_copy, sample_photo
from pimmi.sift import rootsift


def _nlist(factory: str) -> int:
    return int(factory.split("IVF")[1].split(",")[0].split("_")[0])


def test_lists_grow_with_the_corpus_so_a_probe_costs_the_same():
    sizes = [200_000, 2_000_000, 20_000_000 - 1, 200_000_000]
    for n in sizes:
        per_list = n / _nlist(idx.choose_index_type(n))
        assert idx.LIST_SIZE / 1.5 <= per_list <= idx.LIST_SIZE * 1.5 or n > idx.MAX_NLIST * idx.LIST_SIZE
    assert idx.choose_index_type(1000) == "IDMap,Flat"
    assert "HNSW" not in idx.choose_index_type(1_000_000)  # few lists: exhaustive assignment is cheaper
    assert "HNSW" in idx.choose_index_type(20_000_000 - 1)
    assert idx.choose_index_type(200_000_000).startswith("OPQ32_128,IVF262144_HNSW32,PQ32")


@pytest.fixture(scope="module")
def photo_descriptors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RootSIFT of real photos, of their JPEG copies, and the photo each descriptor comes from."""
    sift = cv2.SIFT_create(nfeatures=600)
    orig, copy, owner = [], [], []
    rng = random.Random(0)
    for i, name in enumerate(ORIGINALS):
        im = sample_photo(name)
        im = im.resize((512, round(512 * im.height / im.width)))
        for target, pil in ((orig, im), (copy, jpeg_copy(im, rng))):
            _, d = sift.detectAndCompute(np.asarray(pil.convert("L")), None)
            target.append(rootsift(d))
        owner.append(np.full(len(orig[-1]), i))
    return np.concatenate(orig), np.concatenate(copy), np.concatenate(owner)


@pytest.mark.parametrize("factory", ["IVF64_HNSW32,SQ8", "OPQ16_128,IVF64_HNSW32,PQ16"])
def test_graph_lists_are_trained_in_two_levels_and_find_the_copies(photo_descriptors, factory):
    orig, copy, owner = photo_descriptors
    index = idx.create_index(factory)
    sample = orig.copy()
    idx.train(index, sample)  # a rotation (OPQ) is applied to the sample in place
    assert index.is_trained
    assert np.array_equal(sample, orig) == ("OPQ" not in factory)
    ivf = idx._ivf(index)
    assert ivf.quantizer.ntotal == 64
    # the lists are balanced as k-means lists are: none holds a large part of the corpus
    sizes = np.bincount(ivf.quantizer.search(sample, 1)[1].ravel(), minlength=64)  # in the lists' space
    assert sizes.max() < 0.1 * len(orig) and (sizes > 0).sum() > 0.9 * 64
    index.add(orig)
    idx.set_nprobe(index, 2)
    exact = faiss.IndexFlatL2(idx.DIM)
    exact.add(orig)
    d_exact, i_exact = exact.search(copy, 1)
    _, i_ivf = idx.search(index, copy, 1)
    close = d_exact[:, 0] < 0.05  # the copy's descriptor has a true twin in the original
    assert close.sum() > 500
    # the search with two lists finds what the exact search finds, in the right photo
    assert (i_ivf[close, 0] == i_exact[close, 0]).mean() > 0.9
    assert (owner[i_ivf[close, 0]] == owner[i_exact[close, 0]]).mean() > 0.95


def test_two_level_centroids_are_as_many_as_asked(photo_descriptors):
    orig = photo_descriptors[0]
    for n in (50, 64, 100):
        c = idx._two_level_centroids(orig, n)
        assert c.shape == (n, idx.DIM)
        assert len(np.unique(c.round(5), axis=0)) > 0.95 * n


@pytest.mark.parametrize("factory", ["IVF32,SQ8", "IVF32,Flat"])
def test_list_scan_finds_what_faiss_search_finds(photo_descriptors, factory):
    orig, copy, _ = photo_descriptors
    index = idx.create_index(factory)
    idx.train(index, orig)
    index.add_with_ids(orig, np.arange(len(orig), dtype=np.int64))
    idx.set_nprobe(index, 2)
    max_d2 = 0.16
    searcher = idx.Searcher(index, max_d2)
    assert searcher.ivf is not None  # this index is scanned by lists
    queries = np.concatenate([copy, orig[:2000]])
    for k in (8, 32, 4096):  # 4096: more than two lists hold, so the k-th neighbour is missing (inf)
        D, ids = idx.search(index, queries, k)
        want = idx.Close.from_knn(D, ids, max_d2)
        got = searcher._scan(queries, k, searcher.probes(queries).lists)
        assert len(want.rows) > 1000
        assert np.array_equal(got.rows, want.rows)
        finite = np.isfinite(want.kth)
        assert np.array_equal(np.isfinite(got.kth), finite) and (k < 4096) == finite.all()
        assert np.allclose(got.kth[finite], want.kth[finite], atol=1e-4)
        pairs_want = set(zip(want.hit_row.tolist(), want.hit_id.tolist()))
        pairs_got = set(zip(got.hit_row.tolist(), got.hit_id.tolist()))
        assert len(pairs_got ^ pairs_want) <= 1e-3 * len(pairs_want)  # float rounding at the threshold only


def _same_lists(a: faiss.Index, b: faiss.Index) -> None:
    a, b = faiss.extract_index_ivf(a), faiss.extract_index_ivf(b)
    for lst in range(a.nlist):
        n = a.invlists.list_size(lst)
        assert b.invlists.list_size(lst) == n
        if n:
            assert np.array_equal(
                faiss.rev_swig_ptr(a.invlists.get_ids(lst), n), faiss.rev_swig_ptr(b.invlists.get_ids(lst), n)
            )
            size = n * a.code_size
            assert np.array_equal(
                faiss.rev_swig_ptr(a.invlists.get_codes(lst), size), faiss.rev_swig_ptr(b.invlists.get_codes(lst), size)
            )


@pytest.fixture(scope="module")
def centroids(photo_descriptors) -> tuple[np.ndarray, faiss.IndexFlatL2]:
    """1024 lists' centroids of the photos' descriptors, and an exact search among them."""
    c = idx._two_level_centroids(photo_descriptors[0], 1024)
    exact = faiss.IndexFlatL2(idx.DIM)
    exact.add(c)
    return c, exact


def test_grouped_assignment_finds_the_nearest_list(photo_descriptors, centroids):
    copy = photo_descriptors[1]
    centroids, exact = centroids
    d_exact, i_exact = exact.search(copy, 1)
    d_all, i_all = idx.Assigner(centroids, probes=10_000).nearest(copy, threads=2)  # every group: exact
    assert (i_all == i_exact[:, 0]).mean() > 0.999 and np.allclose(d_all, d_exact[:, 0], atol=1e-4)
    d, i = idx.Assigner(centroids).nearest(copy, threads=2)
    assert (i == i_exact[:, 0]).mean() > 0.9
    assert np.allclose(d, ((copy - centroids[i]) ** 2).sum(axis=1), atol=1e-4)  # the distance to the one given
    assert d.mean() < 1.02 * d_exact.mean()  # when not the nearest, a near one


def test_grouped_assignment_finds_the_nearest_lists_to_probe(photo_descriptors, centroids):
    copy = photo_descriptors[1]
    centroids, exact = centroids
    d_exact, i_exact = exact.search(copy, 3)
    d_all, i_all = idx.Assigner(centroids, probes=10_000).nearest(copy, threads=2, k=3)
    assert (i_all == i_exact).mean() > 0.999 and np.allclose(d_all, d_exact, atol=1e-4)
    d, i = idx.Assigner(centroids, probes=idx.SEARCH_GROUP_PROBES).nearest(copy, threads=2, k=2)
    assert np.all(np.diff(d, axis=1) >= 0)  # nearest first
    found = np.mean([len(set(a) & set(b)) / 2 for a, b in zip(i, i_exact[:, :2])])
    assert found > 0.95


def test_search_through_grouped_assignment_is_faiss_search(photo_descriptors):
    orig, copy, _ = photo_descriptors
    index = idx.create_index("OPQ16_128,IVF256,PQ16")
    faiss.ParameterSpace().set_index_parameter(index, "verbose", 0)
    idx.train(index, orig.copy())
    index.add_with_ids(orig, np.arange(len(orig), dtype=np.int64))
    idx.set_nprobe(index, 2)
    searcher = idx.Searcher(index, 0.16)
    assert searcher.ivf is None and searcher.assigner is None  # few lists: FAISS's own search
    want = searcher.close(copy, 8)
    searcher.assigner = idx.Assigner(faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, 256), probes=10_000)
    got = searcher.close(copy, 8)
    assert len(want.rows) > 500 and np.array_equal(got.rows, want.rows)
    assert np.allclose(got.kth, want.kth, atol=1e-4)
    assert np.array_equal(got.hit_id, want.hit_id)


@pytest.mark.parametrize("factory", ["IVF256,SQ8", "OPQ8_128,IVF256,PQ8"])
def test_grouped_assignment_adds_what_add_with_ids_adds(photo_descriptors, factory):
    orig = photo_descriptors[0]
    ids = np.arange(len(orig), dtype=np.int64) * 3
    direct = idx.create_index(factory)
    faiss.ParameterSpace().set_index_parameter(direct, "verbose", 0)
    idx.train(direct, orig.copy())
    grouped = faiss.deserialize_index(faiss.serialize_index(direct))
    assigner = idx.Assigner(faiss.extract_index_ivf(direct).quantizer.reconstruct_n(0, 256), probes=10_000)
    direct.add_with_ids(orig, ids)
    for part in (slice(0, 3000), slice(3000, len(orig))):
        idx.add(grouped, orig[part], ids[part], assigner, threads=2)
    assert grouped.ntotal == direct.ntotal == len(orig)
    _same_lists(direct, grouped)


@pytest.mark.parametrize("factory", ["IVF16,SQ8", "OPQ8_128,IVF16,PQ8"])
def test_vectors_encoded_elsewhere_make_the_index_add_makes(factory):
    """What a Dask worker computes (each vector's list and code), appended here, gives the index that
    ``add_with_ids`` gives: the same lists holding the same ids and codes in the same order."""
    rng = np.random.default_rng(0)
    x = rootsift(rng.integers(0, 255, (6000, 128)).astype(np.uint8))
    ids = np.arange(len(x), dtype=np.int64) * 7
    direct = idx.create_index(factory)
    faiss.ParameterSpace().set_index_parameter(direct, "verbose", 0)
    idx.train(direct, x[:4000])
    assert idx.has_lists(direct)
    encoded = faiss.deserialize_index(faiss.serialize_index(direct))  # the same trained, empty index
    direct.add_with_ids(x, ids)
    for part in (slice(0, 2500), slice(2500, 6000)):  # in batches, as the workers return them
        idx.add_encoded(encoded, *idx.encode(encoded, x[part]), ids[part])
    assert encoded.ntotal == direct.ntotal == len(x)
    _same_lists(direct, encoded)
    D1, I1 = direct.search(x[:50], 5)
    D2, I2 = encoded.search(x[:50], 5)
    assert np.array_equal(I1, I2)


@pytest.mark.parametrize("factory", ["IVF64,SQ8", "IVF64_HNSW32,SQ8", "OPQ16_128,IVF64,PQ16"])
def test_probes_found_once_serve_every_round(photo_descriptors, factory):
    # A search asks its rows again with more neighbours: their lists, found once, give what a new search gives.
    orig, copy, _ = photo_descriptors
    index = idx.create_index(factory)
    faiss.ParameterSpace().set_index_parameter(index, "verbose", 0)
    idx.train(index, orig.copy())
    index.add_with_ids(orig, np.arange(len(orig), dtype=np.int64))
    idx.set_nprobe(index, 2)
    searcher = idx.Searcher(index, 0.16)
    probes = searcher.probes(copy)
    rows = np.arange(0, len(copy), 3)
    for k in (8, 32):
        want = searcher.close(copy[rows], k)
        got = searcher.close(copy[rows], k, probes[rows])
        assert len(want.rows) > 100 and np.array_equal(got.rows, want.rows)
        assert np.array_equal(got.hit_id, want.hit_id) and np.allclose(got.hit_d, want.hit_d, atol=1e-4)
