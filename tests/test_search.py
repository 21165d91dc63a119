"""Search at scale: exact search shard by shard equals one flat index bit for bit, descriptors stream to disk
and resume after a kill, several processes embed one array, faiss index strings run through every entry
point and the tables name them, a retrieval index is built once and refuses another model."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

import eval as eval_cli
import retrieve
from models.inference import cached_embed_paths
from utils.errors import CheckpointError, ConfigError, DataError
from utils.npy_rows import NpyRows, create_npy, write_rows
from utils.search import FaissIndex, Searcher, Whitening

REPO = Path(__file__).resolve().parents[1]
GEM = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch", "GeM",
       "--model.agg_config", "{}", "--data.image_size", "[32, 32]", "--num_workers", "0", "--device", "cpu",
       "--progress", "false"]
BENCHMARKS = ["pitts30k_val", "pitts30k_test", "pitts250k_val", "pitts250k_test", "msls_val"]
sys.path.insert(0, str(REPO / "tests"))
from stream_embed import tiny_net  # noqa: E402


def flat_search(db: np.ndarray, q: np.ndarray, k: int):
    """Today's exact search: one IndexFlatL2 over the whole database."""
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    return index.search(q, k)


def on_disk(array: np.ndarray, path: Path) -> NpyRows:
    create_npy(path, array.shape, array.dtype)
    write_rows(path, 0, array)
    return NpyRows(path)


def tied_set(n: int, d: int, nq: int, seed: int = 0):
    """Normalised descriptors rounded to 2 decimals (many exact ties) with 150 copies of row 10, and queries
    near database rows (three are row 10 itself: 151 neighbours at one distance)."""
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(n, d)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    db[n // 2: n // 2 + 150] = db[10]
    db = db.round(2).astype(np.float32)
    q = (db[rng.integers(0, n, nq)] + 0.01 * rng.normal(size=(nq, d))).astype(np.float32)
    q[:3] = db[10]
    return db, q


# ----------------------------------------------------------------------------- exact search in a memory budget
@pytest.mark.parametrize("d,nq", [(16, 40), (128, 1100)], ids=["pairwise-path", "blas-path"])
def test_sharded_exact_search_equals_one_flat_index_bit_for_bit(d, nq, tmp_path):
    # faiss computes distances pair by pair below queries x dim = 128,000 and by BLAS blocks above it
    assert (nq * d >= faiss.cvar.distance_compute_blas_threshold) == (d == 128)
    db, q = tied_set(3000, d, nq)
    rows = on_disk(db, tmp_path / "db.npy")
    for k in (1, 5, 100, 160):
        expected = flat_search(db, q, k)
        shards = []
        # from below what the queries and results need to more than the whole database
        steps = np.arange(20, 500, 40) if d == 16 else np.arange(17_000, 26_000, 500)
        for budget in [None] + [f"{kb}kB" for kb in steps]:
            try:
                index = Searcher(memory_budget=budget).build(rows)
                found = index.search(q, k)
            except ConfigError as err:  # below the queries, results (and BLAS block) of this k
                assert "too small" in str(err) and budget is not None
                continue
            np.testing.assert_array_equal(found[1], expected[1], err_msg=f"k={k}, budget={budget}")
            np.testing.assert_array_equal(found[0], expected[0], err_msg=f"k={k}, budget={budget}")
            shards.append(index.stats["shards"])
        assert max(shards) > 2 and shards[0] == 1, shards
    # the order of ties is (distance, database index): the 151 copies of row 10 come in index order
    _, indices = Searcher(memory_budget="300kB" if d == 16 else "18MB").search(rows, q[:3], 160)
    copies = np.r_[10, np.arange(1500, 1650)]
    assert (indices[:, :151] == copies).all()


def test_memory_budget_too_small_or_malformed_is_a_config_error():
    db, q = tied_set(2000, 128, 1100)
    with pytest.raises(ConfigError, match=r"too small for exact search of 1100 128-d queries: it needs at least 18\.\d MB"):
        Searcher(memory_budget="4MB").search(db, q, 10)
    with pytest.raises(ConfigError, match="not a size"):
        Searcher(memory_budget="four gigabytes")


def test_unknown_index_strings_and_params_are_config_errors_before_anything_is_built():
    with pytest.raises(ConfigError, match=r"'IVF16,PQ5'.*multiple of the number of subquantizers.*e\.g\. Flat, SQfp16"):
        Searcher("IVF16,PQ5").check(256)
    with pytest.raises(ConfigError, match="could not parse"):
        Searcher("Fast").check(256)
    with pytest.raises(ConfigError, match="'efSearch=16' do not apply"):
        Searcher("IVF16,Flat", params="efSearch=16").check(256)
    with pytest.raises(ConfigError, match="exact search"):
        Searcher(params="nprobe=4").check(256)


def test_compressed_indexes_are_trained_on_a_sample_and_keep_most_true_neighbours(tmp_path):
    rng = np.random.default_rng(0)
    places = rng.normal(size=(200, 32)).astype(np.float32)
    db = places[rng.integers(0, 200, 4000)] + 0.3 * rng.normal(size=(4000, 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:200] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    rows = on_disk(db, tmp_path / "db.npy")
    _, true = flat_search(db, q, 1)
    for string, params, floor in [("SQfp16", None, 0.99), ("PCAR16,Flat", None, 0.6), ("IVF8,PQ8x4", "nprobe=4", 0.4),
                                  ("IVF8,PQ8x4,RFlat", "nprobe=8,k_factor_rf=16", 0.9), ("HNSW8", "efSearch=32", 0.9),
                                  ("BFlat", None, 0.3), ("BIVF4", "nprobe=4", 0.3)]:
        searcher = Searcher(string, params=params, train_size=1000, memory_budget="1MB")
        index = searcher.build(rows)
        _, found = index.search(q, 1)
        assert (found[:, 0] == true[:, 0]).mean() >= floor, string
        assert index.stats["train_rows"] == (0 if string in ("SQfp16", "HNSW8") else 1000)  # binary: its centre
        if isinstance(index, FaissIndex):  # saved and loaded: the same answers
            index.save(tmp_path / "index.faiss")
            again = FaissIndex.load(tmp_path / "index.faiss", searcher)
            np.testing.assert_array_equal(again.search(q, 1)[1], found)


def test_pca_whitening_decorrelates_the_training_set_and_is_the_same_in_every_shard():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(64, 64)).astype(np.float32)
    train = rng.normal(size=(3000, 64)).astype(np.float32) @ mix
    whitening = Whitening.learn(train, 16)
    covariance = np.cov(whitening.pca.apply(train).T)  # equal variances (faiss scales by 1 / n), no correlation
    np.testing.assert_allclose(covariance / covariance[0, 0], np.eye(16), atol=0.05)
    db, q = tied_set(5000, 64, 50)
    exact = Searcher().search(db, q, 10, whitening)
    sharded = Searcher(memory_budget="600kB").search(db, q, 10, whitening)
    np.testing.assert_array_equal(exact[0], sharded[0])
    np.testing.assert_array_equal(exact[1], sharded[1])
    with pytest.raises(ConfigError, match="needs more than 16 training descriptors"):
        Whitening.learn(train[:16], 16)


# ----------------------------------------------------------------------------- eval.py at any budget
def run_eval(weights, out_dir, synthetic, *extra) -> dict:
    return eval_cli.main(["--checkpoint", str(weights), "--benchmarks", json.dumps(BENCHMARKS), "--names", "[m]",
                          "--data.pitts_root", str(synthetic["pitts"]), "--data.msls_root", str(synthetic["msls"]),
                          "--out_dir", str(out_dir), *GEM, *map(str, extra)])["m"]


def newest(out_dir: Path) -> Path:
    return max(out_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def predictions(out_dir: Path) -> dict:
    """{benchmark: the rows of retrievals.csv} of the newest run."""
    return {b: (newest(out_dir) / "retrievals" / "m" / b / "retrievals.csv").read_text() for b in BENCHMARKS}


def test_exact_recall_is_identical_in_memory_on_disk_and_at_a_budget_of_many_shards(gem_weights, synthetic, tmp_path):
    runs = {}
    for name, extra in (("in memory", ["--cache", "false"]), ("on disk", []),
                        ("many shards", ["--search.memory_budget", "35kB"])):
        record = run_eval(gem_weights, tmp_path, synthetic, "--visualize", "1", "--k", "[1, 5, 10]", *extra)
        runs[name] = ({b: r["recall"] for b, r in record["benchmarks"].items()}, predictions(tmp_path),
                      {b: r["search"].get("shards") for b, r in record["benchmarks"].items()})
    assert runs["on disk"][:2] == runs["in memory"][:2] == runs["many shards"][:2]
    assert min(runs["many shards"][2].values()) > 1 and set(runs["in memory"][2].values()) == {1}
    record = json.loads((newest(tmp_path) / "recalls.json").read_text())
    assert record["protocol"]["search"]["memory_budget"] == "35kB"
    assert "exact nearest neighbours (faiss Flat)" in (newest(tmp_path) / "recalls.md").read_text()


INDEXES = ["SQfp16", "PCAR16,Flat", "IVF2,PQ4x4", "IVF2,PQ4x4,RFlat", "HNSW8", "BFlat", "BIVF2"]


@pytest.fixture(scope="module")
def eval_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval_cache")


@pytest.mark.parametrize("index", INDEXES)
def test_each_index_string_runs_through_eval_and_the_table_names_it(index, gem_weights, synthetic, eval_cache, tmp_path):
    params = {"IVF2,PQ4x4": "nprobe=2", "HNSW8": "efSearch=16"}.get(index)
    record = run_eval(gem_weights, tmp_path, synthetic, "--search.index", index, "--cache_dir", eval_cache,
                      *(["--search.params", params] if params else []))
    for name, result in record["benchmarks"].items():
        assert result["search"]["index"] == index and not result["search"]["exact"], name
        assert 0 <= result["recall"]["1"] <= result["recall"]["10"] <= 1
    table = (newest(tmp_path) / "recalls.md").read_text()
    assert f"approximate nearest neighbours, faiss index {index}" + (f" ({params})" if params else "") in table
    assert json.loads((newest(tmp_path) / "recalls.json").read_text())["protocol"]["search"]["index"] == index


def test_whitening_learned_on_training_images_is_applied_and_stated(gem_weights, synthetic, eval_cache, tmp_path):
    train = synthetic["gsv_cities"] / "Images"
    record = run_eval(gem_weights, tmp_path, synthetic, "--cache_dir", eval_cache, "--search.whitening", train,
                      "--search.whitening_dim", "16")
    search = record["benchmarks"]["pitts30k_test"]["search"]
    assert search["whitening_dims"] == [256, 16] and len(search["whitening_sha256"]) == 64
    assert f"after PCA whitening to 16-d learned on {train}" in (newest(tmp_path) / "recalls.md").read_text()


def test_validation_searches_with_the_model_search_setting(synthetic, monkeypatch):
    import lightning as L
    from torch.utils.data import DataLoader

    from dataloaders.eval import build_eval_set
    from dataloaders.transforms import EvalTransform
    from models import VPRModel

    built = []
    original = Searcher.build
    monkeypatch.setattr(Searcher, "build", lambda self, *a, **kw: built.append(self.index) or original(self, *a, **kw))
    torch.manual_seed(0)
    model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), search={"index": "HNSW8"})
    assert model.hparams.search["index"] == "HNSW8"  # stored as plain values in checkpoints
    data = build_eval_set("pitts30k_val", {"pitts_root": synthetic["pitts"]}, EvalTransform((32, 32)))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.validate(model, DataLoader(data, batch_size=16))
    assert built == ["HNSW8"] and set(model.eval_recalls["pitts30k_val"]) == {1, 5, 10, 15, 20, 50, 100}
    with pytest.raises(ConfigError, match="whitening is learned on a training set by eval.py"):
        VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), search={"whitening": "x"})


# ----------------------------------------------------------------------------- streaming, resuming, several processes
@pytest.fixture(scope="module")
def image_list(synthetic, tmp_path_factory) -> Path:
    """18 images (5 chunks of 4 in stream_embed.py, the last one of 2)."""
    images = sorted(str(p) for p in (synthetic["pitts"] / "000").glob("*.jpg"))[:18]
    path = tmp_path_factory.mktemp("list") / "images.txt"
    path.write_text("\n".join(images))
    return path


@pytest.fixture(scope="module")
def reference(gem_weights, image_list, tmp_path_factory) -> np.ndarray:
    """The descriptors of one uninterrupted single-process run, through the cache."""
    from stream_embed import BATCH, CHUNK

    cache = tmp_path_factory.mktemp("reference")
    rows, _, _ = cached_embed_paths(tiny_net(gem_weights), image_list.read_text().splitlines(), cache, "set",
                                    chunk_size=CHUNK, batch_size=BATCH, progress=False)
    assert isinstance(rows, NpyRows)  # on disk, read by blocks
    return np.asarray(rows)


def child(gem_weights, image_list, cache, out, *extra) -> list[str]:
    return [sys.executable, str(REPO / "tests" / "stream_embed.py"), str(gem_weights), str(image_list), str(cache),
            str(out), *map(str, extra)]


def test_killed_embedding_resumes_from_its_finished_chunks(gem_weights, image_list, reference, tmp_path):
    cache = tmp_path / "cache"
    proc = subprocess.Popen(child(gem_weights, image_list, cache, tmp_path / "out.json", "--delay", "0.4"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(list(cache.glob("*.chunks/*.json"))) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(cache.glob("*.chunks/*.json")))
    assert 2 <= done < 5 and not list(cache.glob("*.json"))  # killed before the array was complete
    net = tiny_net(gem_weights)
    embedded = []
    net.register_forward_pre_hook(lambda module, inputs: embedded.append(len(inputs[0])))
    rows, _, reused = cached_embed_paths(net, image_list.read_text().splitlines(), cache, "set", chunk_size=4,
                                         batch_size=2, progress=False)
    assert not reused and sum(embedded) == 18 - 4 * done  # only the chunks the killed run did not finish
    np.testing.assert_array_equal(np.asarray(rows), reference)
    assert sorted(p.name for p in cache.iterdir()) == sorted([rows.path.name, rows.path.with_suffix(".json").name])


def test_two_processes_embed_disjoint_chunks_into_the_array_of_one(gem_weights, image_list, reference, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path / "cache"
    procs = [subprocess.Popen(child(gem_weights, image_list, cache, tmp_path / f"rank{r}.json", "--rank", r,
                                    "--world", 2, "--port", port), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for r in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]
    counts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [c["embedded"] for c in counts] == [10, 8]  # chunks 0, 2, 4 and 1, 3: each image once
    assert all(c["rows"] == 18 and not c["reused"] for c in counts)
    (npy,) = cache.glob("*.npy")
    np.testing.assert_array_equal(np.asarray(NpyRows(npy)), reference)


def test_float16_cache_is_half_the_size_stored_apart_and_close_to_float32(gem_weights, image_list, reference, tmp_path):
    net, paths = tiny_net(gem_weights), image_list.read_text().splitlines()
    half, _, _ = cached_embed_paths(net, paths, tmp_path, "set", dtype="float16", chunk_size=4, progress=False)
    full, _, reused = cached_embed_paths(net, paths, tmp_path, "set", chunk_size=4, progress=False)
    assert half.dtype == np.float16 and full.dtype == np.float32 and not reused
    assert half.path != full.path and half.path.stat().st_size < 0.6 * full.path.stat().st_size
    np.testing.assert_allclose(np.asarray(half, dtype=np.float32), reference, atol=2e-3)
    again, _, reused = cached_embed_paths(net, paths, tmp_path, "set", dtype="float16", chunk_size=4, progress=False)
    assert reused and again.path == half.path


# ----------------------------------------------------------------------------- the persistent retrieval index
@pytest.fixture(scope="module")
def photos(synthetic, tmp_path_factory):
    """A database folder of 20 views and two queries that are copies of database images 3 and 11."""
    import shutil

    root = tmp_path_factory.mktemp("photos")
    (root / "db").mkdir()
    (root / "q").mkdir()
    db = sorted((synthetic["pitts"] / "000").glob("*.jpg"))[:20]
    for p in db:
        shutil.copy(p, root / "db" / p.name)
    for n, i in enumerate((3, 11)):
        shutil.copy(db[i], root / "q" / f"query_{n}.jpg")
    return root, {str(root / "q" / f"query_{n}.jpg"): str(root / "db" / db[i].name) for n, i in enumerate((3, 11))}


def matches(csv_path: Path) -> dict:
    out = {}
    for row in csv.DictReader(csv_path.open()):
        out.setdefault(row["query"], []).append(row["match"])
    return out


@pytest.mark.parametrize("index", ["Flat", "IVF2,Flat", "BFlat"])
def test_database_index_is_built_once_then_queried_without_embedding_or_indexing_again(index, photos, gem_weights,
                                                                                      tmp_path, monkeypatch):
    root, answers = photos
    run = lambda *extra: retrieve.main(["--checkpoint", str(gem_weights), "--queries", str(root / "q"), "--top_k", "3",
                                        "--out_dir", str(tmp_path / "out"), "--database_index", str(tmp_path / "index"),
                                        "--search.index", index, *GEM, *extra])
    first = matches(run("--database", str(root / "db")))
    assert {q: m[0] for q, m in first.items()} == answers
    record = json.loads((tmp_path / "index" / "index.json").read_text())
    assert record["search"]["index"] == index and record["database"]["images"] == 20
    from models.network import VPRNet
    images_seen, builds = [], []
    forward = VPRNet.forward
    monkeypatch.setattr(VPRNet, "forward", lambda net, x: images_seen.append(len(x)) or forward(net, x))
    build = Searcher.build
    monkeypatch.setattr(Searcher, "build", lambda self, *a, **kw: builds.append(self.index) or build(self, *a, **kw))
    again = matches(run(*(["--cache", "false"])))  # no --database: the index as built; queries embedded afresh
    assert again == first and sum(images_seen) == 2 and builds == ([] if index != "Flat" else ["Flat"])


def test_database_index_refuses_another_model_another_image_list_or_changed_bytes(photos, gem_weights, tmp_path):
    root, _ = photos
    run = lambda weights, *extra: retrieve.main(["--checkpoint", str(weights), "--queries", str(root / "q"),
                                                 "--out_dir", str(tmp_path / "out"), "--database_index",
                                                 str(tmp_path / "index"), "--search.index", "IVF2,Flat", *GEM, *extra])
    run(gem_weights, "--database", str(root / "db"))
    other = tmp_path / "other.pth"
    state = torch.load(gem_weights)
    state["aggregator.p"] = state["aggregator.p"] + 0.5
    torch.save(state, other)
    with pytest.raises(CheckpointError, match=rf"built with the model gem \({gem_weights}, network [0-9a-f]{{12}}\); "
                                              rf"this run uses other \({other}, network [0-9a-f]{{12}}\)"):
        run(other)
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("\n".join(sorted(str(p) for p in (root / "db").glob("*.jpg"))[:10]))
    with pytest.raises(DataError, match="built from another image list .20 images.*--database now gives 10"):
        run(gem_weights, "--database", str(fewer))
    with pytest.raises(ConfigError, match="holds a 'IVF2,Flat' index; this run asks for 'HNSW8'"):
        run(gem_weights, "--search.index", "HNSW8")
    with (tmp_path / "index" / "index.faiss").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(DataError, match="index.faiss differs from the sha256 recorded"):
        run(gem_weights)
