"""The synthetic data generator: real on-disk formats, meaningful geometry, determinism, safe shared folders."""
import contextlib
import hashlib
import math
import multiprocessing as mp
import os
import re
import string
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import loadmat

from dataloaders.synthetic import (GENERATOR_VERSION, MSLS_CITIES, PITTSBURGH_SPLITS, SCALES, SYNTHETIC_CITIES,
                                   generate_synthetic, make_msls, make_pittsburgh, set_folder, synthetic_roots)
from dataloaders.synthetic import generate as generation
from dataloaders.synthetic.__main__ import main
from utils.files import host_id

DB_STRUCT_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
                    "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")
GSV_COLUMNS = ["place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid"]


@pytest.fixture(scope="module")
def tiny(synthetic):
    """The tiny scale of every data set (the session's, generated once)."""
    return synthetic


def read_gsv_city(root, city):
    return pd.read_csv(root / "Dataframes" / f"{city}.csv", dtype={"lat": str, "lon": str, "panoid": str})


def gsv_file_name(row):
    return (f"{row.city_id}_{row.place_id:07d}_{row.year:04d}_{row.month:02d}_{row.northdeg:03d}_"
            f"{row.lat}_{row.lon}_{row.panoid}.jpg")


def read_db_struct(path):
    return loadmat(str(path))["dbStruct"][0, 0]


def cell_strings(cell):
    return [str(c[0]) for c in cell.ravel()]


# ---------------------------------------------------------------------------------------------- GSV


def test_gsv_csv_rows_rebuild_to_existing_image_files(tiny):
    root = tiny["gsv_cities"]
    assert sorted(p.stem for p in (root / "Dataframes").glob("*.csv")) == sorted(SYNTHETIC_CITIES)
    for city in SYNTHETIC_CITIES:
        df = read_gsv_city(root, city)
        assert list(df.columns) == GSV_COLUMNS
        names = {gsv_file_name(row) for row in df.itertuples()}
        on_disk = {p.name for p in (root / "Images" / city).iterdir()}
        assert names == on_disk, "every CSV row names an image and every image has a row"
        assert len(names) == len(df)


def test_gsv_places_have_varied_image_counts_some_below_four(tiny):
    counts = []
    for city in SYNTHETIC_CITIES:
        df = read_gsv_city(tiny["gsv_cities"], city)
        ids = np.unique(df["place_id"])
        assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids))), "place ids per city count from 0"
        assert (df["city_id"] == city).all()
        counts += df.groupby("place_id").size().tolist()
    counts = np.array(counts)
    assert counts.min() >= 2 and counts.max() <= 8
    assert (counts < 4).sum() >= 2, "a few places must fall to min_img_per_place=4"
    assert len(np.unique(counts[counts >= 4])) >= 3


def test_gsv_names_carry_panoid_heading_and_coordinates_as_written(tiny):
    df = pd.concat([read_gsv_city(tiny["gsv_cities"], c) for c in SYNTHETIC_CITIES])
    alphabet = set(string.ascii_letters + string.digits + "_-")
    assert all(len(p) == 22 and set(p) <= alphabet for p in df["panoid"])
    assert df["panoid"].is_unique
    assert df["northdeg"].between(0, 359).all() and df["month"].between(1, 12).all()
    decimals = {len(s.split(".")[1]) for s in pd.concat([df["lat"], df["lon"]])}
    assert len(decimals) >= 2, "lat/lon are written with varied numbers of decimals"


def test_gsv_images_of_a_place_are_close_and_places_are_far_apart(tiny):
    df = read_gsv_city(tiny["gsv_cities"], SYNTHETIC_CITIES[0])
    lat, lon = df["lat"].astype(float).to_numpy(), df["lon"].astype(float).to_numpy()
    north = (lat - lat[0]) * 111_320.0
    east = (lon - lon[0]) * 111_320.0 * math.cos(math.radians(lat[0]))
    xy = np.stack([east, north], 1)
    centres = np.stack([xy[df["place_id"] == p].mean(0) for p in np.unique(df["place_id"])])
    spread = np.linalg.norm(xy - centres[df["place_id"]], axis=1)
    assert spread.max() < 7.0
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(len(centres), 1)]
    assert gaps.min() > 45.0, "two places never share content"


# ---------------------------------------------------------------------------------------- Pittsburgh


def test_pittsburgh_mat_has_netvlad_dbstruct_layout(tiny):
    for name in PITTSBURGH_SPLITS:
        path = tiny["pitts"] / "datasets" / f"{name}.mat"
        raw = loadmat(str(path))["dbStruct"]
        assert raw.shape == (1, 1)
        s = raw[0, 0]
        assert s.dtype.names == DB_STRUCT_FIELDS
        n, m = int(s["numImages"].item()), int(s["numQueries"].item())
        assert s["dbImageFns"].shape == (n, 1) and s["qImageFns"].shape == (m, 1)
        assert s["utmDb"].shape == (2, n) and s["utmQ"].shape == (2, m)
        assert isinstance(s["dbImageFns"][0, 0][0], str)
        assert str(s["whichSet"][0]) == name.split("_")[1]
        assert (s["posDistThr"].item(), s["posDistSqThr"].item(), s["nonTrivPosDistSqThr"].item()) == (25, 625, 100)


def test_pittsburgh_images_exist_and_a_few_queries_have_no_positive(tiny):
    root = tiny["pitts"]
    seen_db, seen_q = set(), set()
    for name in PITTSBURGH_SPLITS:
        s = read_db_struct(root / "datasets" / f"{name}.mat")
        db, q = cell_strings(s["dbImageFns"]), cell_strings(s["qImageFns"])
        assert all((root / p).is_file() for p in db)
        assert all((root / "queries_real" / p).is_file() for p in q)
        for p in db + q:
            folder, file = p.split("/")
            assert re.fullmatch(r"\d{6}_pitch1_yaw\d{1,2}\.jpg", file) and folder == f"{int(file[:6]) // 1000:03d}"
        assert not (seen_db & set(db)) and not (seen_q & set(q)), "splits do not overwrite each other's images"
        seen_db |= set(db)
        seen_q |= set(q)
        d2 = ((s["utmQ"].T[:, None] - s["utmDb"].T[None]) ** 2).sum(-1)
        has_positive = (d2 <= 625).any(1)
        assert 1 <= (~has_positive).sum() <= 0.2 * len(q)


# ---------------------------------------------------------------------------------------------- MSLS


def test_msls_positives_are_exactly_the_database_images_within_25_m(tiny):
    root = tiny["msls"]
    db = np.load(root / "msls_val_dbImages.npy")
    q = np.load(root / "msls_val_qImages.npy")
    q_idx = np.load(root / "msls_val_qIdx.npy")
    p_idx = np.load(root / "msls_val_pIdx.npy", allow_pickle=True)
    assert p_idx.dtype == object and p_idx.ndim == 1 and len(p_idx) == len(q_idx)
    assert all((root / p).is_file() for p in list(db) + list(q))
    assert {p.split("/")[1] for p in db} == set(MSLS_CITIES)

    def positions(paths, part):
        frames = {c: pd.read_csv(root / "train_val" / c / part / "postprocessed.csv", index_col=0)
                  .set_index("key") for c in MSLS_CITIES}
        city = np.array([p.split("/")[1] for p in paths])
        keys = [p.rsplit("/", 1)[1][:-4] for p in paths]
        xy = np.array([frames[c].loc[k, ["easting", "northing"]].to_numpy(float) for c, k in zip(city, keys)])
        return city, xy

    db_city, db_xy = positions(db, "database")
    q_city, q_xy = positions(q, "query")
    within = (np.linalg.norm(q_xy[:, None] - db_xy[None], axis=-1) <= 25) & (q_city[:, None] == db_city[None])
    assert np.array_equal(q_idx, np.flatnonzero(within.any(1)))
    assert len(q_idx) < len(q), "some queries have no positive and are left out, as the real 747 -> 740"
    for i, p in zip(q_idx, p_idx):
        assert np.array_equal(np.sort(p), np.flatnonzero(within[i]))


# --------------------------------------------------------------------------------- determinism, cache


def test_generation_is_deterministic_whatever_the_workers_and_depends_on_seed(tmp_path):
    splits = {"pitts30k_val": (12, 4)}
    a = make_pittsburgh(tmp_path / "a", splits, seed=0, workers=1)
    b = make_pittsburgh(tmp_path / "b", splits, seed=0, workers=2)
    c = make_pittsburgh(tmp_path / "c", splits, seed=1, workers=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 12 + 4 + 2  # the images, the .mat and the stand-in's counts
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    images = lambda root: {p.read_bytes() for p in root.rglob("*.jpg")}
    assert len(images(c)) == 16 and not images(a) & images(c), "another seed gives other images"


@pytest.fixture
def micro_scale(monkeypatch):
    """A scale of a handful of images, so that caching tests regenerate in a fraction of a second."""
    monkeypatch.setitem(SCALES, "micro", {
        "gsv_places_per_city": 1, "pitts": {n: (4, 2) for n in PITTSBURGH_SPLITS}, "msls": (4, 2),
        "benchmarks": {"street": (2, 1), "pairs": 1, "frames": 2}})
    return "micro"


def digest(folder):
    """relative path -> sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_synthetic_writes_each_scale_and_seed_once_into_its_own_folder(tmp_path, micro_scale):
    assert synthetic_roots(tmp_path / "none", micro_scale, seed=3) == {
        "gsv_root": tmp_path / "none" / f"micro-seed3-v{GENERATOR_VERSION}" / "gsv_cities",
        "pitts_root": tmp_path / "none" / f"micro-seed3-v{GENERATOR_VERSION}" / "pitts",
        "msls_root": tmp_path / "none" / f"micro-seed3-v{GENERATOR_VERSION}" / "msls",
        "benchmarks_root": tmp_path / "none" / f"micro-seed3-v{GENERATOR_VERSION}" / "benchmarks"}
    assert not (tmp_path / "none").exists(), "synthetic_roots generates nothing"
    paths = generate_synthetic(tmp_path, scale=micro_scale, workers=1)
    folder = set_folder(tmp_path, micro_scale)
    assert paths == {"gsv_cities": folder / "gsv_cities", "pitts": folder / "pitts", "msls": folder / "msls",
                     "benchmarks": folder / "benchmarks"}
    assert list(synthetic_roots(tmp_path, micro_scale).values()) == list(paths.values())
    first = digest(folder)
    mat = paths["pitts"] / "datasets" / "pitts30k_val.mat"
    stamp = mat.stat().st_mtime_ns
    assert generate_synthetic(tmp_path, scale=micro_scale, workers=1) == paths
    assert mat.stat().st_mtime_ns == stamp, "a complete data set is not written again"
    other = generate_synthetic(tmp_path, scale=micro_scale, seed=1, workers=1)
    assert other["pitts"].parent == tmp_path / f"micro-seed1-v{GENERATOR_VERSION}"
    assert digest(folder) == first and mat.stat().st_mtime_ns == stamp, "another seed leaves the first set intact"
    assert digest(other["pitts"].parent) != first


def test_interrupted_generation_leaves_no_folder_and_the_next_one_completes(tmp_path, micro_scale, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation, "make_msls", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path, scale=micro_scale, workers=1)
    assert [p.name for p in tmp_path.iterdir()] == [f".micro-seed0-v{GENERATOR_VERSION}.lock"]
    monkeypatch.setattr(generation, "make_msls", make_msls)
    paths = generate_synthetic(tmp_path, scale=micro_scale, workers=1)
    assert (paths["msls"] / "msls_val_pIdx.npy").is_file() and (paths["msls"].parent / ".complete").is_file()


def _generate_after(barrier, root, scale):
    """A concurrent generator: start with the others, then generate (run in a forked process)."""
    barrier.wait()
    generate_synthetic(root, scale=scale, workers=1)


@pytest.mark.parametrize("locked", [True, False], ids=["waits-on-lock", "loses-rename-race"])
def test_concurrent_generators_of_one_set_both_succeed_with_the_single_generation_bytes(tmp_path, micro_scale,
                                                                                      monkeypatch, locked):
    ctx = mp.get_context("fork")
    if not locked:
        # a file system that ignores the lock: both build (they meet mid-way), both rename, one collides
        middle = ctx.Barrier(2)

        def make_msls_together(*args, **kwargs):
            middle.wait(timeout=60)
            return make_msls(*args, **kwargs)

        monkeypatch.setattr(generation, "_lock", lambda path: contextlib.nullcontext())
        monkeypatch.setattr(generation, "make_msls", make_msls_together)
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_generate_after, args=(start, tmp_path / "shared", micro_scale)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    monkeypatch.setattr(generation, "make_msls", make_msls)
    generate_synthetic(tmp_path / "single", scale=micro_scale, workers=1)
    assert digest(set_folder(tmp_path / "shared", micro_scale)) == digest(set_folder(tmp_path / "single", micro_scale))
    left = sorted(p.name for p in (tmp_path / "shared").iterdir())
    assert left == sorted(p.name for p in (tmp_path / "single").iterdir()), "no temporary folder is left behind"


def test_stale_temporary_folder_of_a_dead_generator_is_removed_and_no_other(tmp_path, micro_scale):
    name, host = set_folder(tmp_path, micro_scale).name, host_id()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    stale = tmp_path / f".{name}.{host}.{dead}.0badc0de.tmp"
    (stale / "pitts").mkdir(parents=True)
    kept = [tmp_path / f".{name}.{host}.{os.getpid()}.1badc0de.tmp",  # a running generator's
            tmp_path / f".{name}.not-{host}.{dead}.2badc0de.tmp",  # another host's: its pid says nothing here
            tmp_path / f".{set_folder(tmp_path, micro_scale, seed=1).name}.{host}.{dead}.3badc0de.tmp"]  # other set
    for folder in kept:
        folder.mkdir()
    generate_synthetic(tmp_path, scale=micro_scale, workers=1)
    assert not stale.exists()
    assert all(folder.is_dir() for folder in kept)


def test_foreign_folders_are_never_touched(tmp_path, micro_scale):
    # data of the former layout (root/pitts/...) beside the sets is left alone
    (tmp_path / "pitts").mkdir()
    (tmp_path / "pitts" / "precious.mat").write_bytes(b"real data")
    folder = set_folder(tmp_path, micro_scale)
    for content in (None, b"{}", b"not json"):
        folder.mkdir(exist_ok=True)
        if content is not None:
            (folder / ".complete").write_bytes(content)
        with pytest.raises(FileExistsError, match=re.escape(str(folder))):
            generate_synthetic(tmp_path, scale=micro_scale, workers=1)
        assert [p.name for p in folder.iterdir()] == ([] if content is None else [".complete"])
    assert (tmp_path / "pitts" / "precious.mat").read_bytes() == b"real data"
    assert generate_synthetic(tmp_path, scale=micro_scale, seed=1, workers=1)["pitts"].is_dir()


def test_command_line_generates_the_data_sets(tmp_path, micro_scale, capsys):
    main([str(tmp_path), "--scale", micro_scale, "--workers", "1"])
    assert (set_folder(tmp_path, micro_scale) / ".complete").is_file()
    assert str(set_folder(tmp_path, micro_scale) / "pitts") in capsys.readouterr().out


def test_unknown_scale_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic scale"):
        generate_synthetic(tmp_path, scale="huge")
    with pytest.raises(ValueError, match="unknown synthetic scale"):
        synthetic_roots(tmp_path, scale="huge")


# ------------------------------------------------------------------------------------------ geometry


def _grey(path, size=(32, 24)):
    g = np.asarray(Image.open(path).convert("L").resize(size, Image.BILINEAR), np.float64)
    return (g - g.mean()) / (g.std() + 1e-6)


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum() + 1e-12))


def _shifted_ncc(a, b, max_shift=10):
    """Best NCC over horizontal shifts: views of one place share content, displaced."""
    w = a.shape[1]
    return max(_ncc(a[:, max(s, 0):w + min(s, 0)], b[:, max(-s, 0):w + min(-s, 0)])
               for s in range(-max_shift, max_shift + 1))


def test_views_within_10_m_share_shifted_structure_that_pixels_and_colours_miss(tiny):
    root = tiny["pitts"]
    s = read_db_struct(root / "datasets" / "pitts30k_val.mat")
    paths = [root / p for p in cell_strings(s["dbImageFns"])]
    utm = s["utmDb"].T
    grey = [_grey(p) for p in paths]
    hist = []
    for p in paths:
        h = np.histogramdd(np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3), bins=4, range=[(0, 256)] * 3)[0]
        hist.append(h.ravel() / h.sum())
    dist = np.linalg.norm(utm[:, None] - utm[None], axis=-1)
    i, j = np.triu_indices(len(paths), 1)
    near, far = (dist[i, j] <= 10), (dist[i, j] > 100)
    far &= np.random.default_rng(0).random(len(i)) < 200 / max(far.sum(), 1)
    assert near.sum() >= 20 and far.sum() >= 100

    def scores(f):
        return (np.array([f(a, b) for a, b in zip(i[near], j[near])]),
                np.array([f(a, b) for a, b in zip(i[far], j[far])]))

    def auc(pos, neg):
        return float((pos[:, None] > neg[None]).mean())

    shifted = scores(lambda a, b: _shifted_ncc(grey[a], grey[b]))
    assert shifted[0].mean() > shifted[1].mean() + 0.15, "nearby views share (shifted) structure"
    assert auc(*shifted) > 0.65
    plain = scores(lambda a, b: _ncc(grey[a], grey[b]))
    assert auc(*plain) < 0.7, "raw aligned pixels must not solve the task"
    colour = scores(lambda a, b: np.minimum(hist[a], hist[b]).sum())
    assert auc(*colour) < 0.75, "colour histograms must not solve the task"


# ----------------------------------------------------------------------------------- the real loaders


def test_real_loaders_read_the_synthetic_data(tiny):
    from dataloaders.eval.msls import MSLSValDataset
    from dataloaders.eval.pittsburgh import PittsburghDataset
    from dataloaders.gsv_cities import GSVCitiesDataset

    gsv = GSVCitiesDataset(tiny["gsv_cities"], SYNTHETIC_CITIES, img_per_place=4, min_img_per_place=4)
    total = sum(read_gsv_city(tiny["gsv_cities"], c)["place_id"].nunique() for c in SYNTHETIC_CITIES)
    assert 0 < gsv.num_places < total
    for name in PITTSBURGH_SPLITS:
        s = read_db_struct(tiny["pitts"] / "datasets" / f"{name}.mat")
        ds = PittsburghDataset(tiny["pitts"], name)
        assert len(ds) == int(s["numImages"].item()) + int(s["numQueries"].item())
    msls = MSLSValDataset(tiny["msls"])
    assert len(msls) == len(np.load(tiny["msls"] / "msls_val_dbImages.npy")) + len(
        np.load(tiny["msls"] / "msls_val_qIdx.npy"))
