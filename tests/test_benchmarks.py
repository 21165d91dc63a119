"""The benchmark registry: every named benchmark read in its published format with its pinned protocol and
counts, suites laid out as the papers' tables, label-free sets, saved descriptors and predictions, roots,
and the converters from the raw releases (all on tiny generated data in the real formats)."""
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_cli
from dataloaders.convert.__main__ import main as convert_main
from dataloaders.datamodule import VPRDataModule
from dataloaders.eval import BENCHMARKS, SUITES, build_eval_set, expand_benchmarks
from dataloaders.eval.msls_test import check_challenge_file
from dataloaders.eval.registry import STANDIN_FILE, count_error, standin_counts
from dataloaders.roots import data_roots
from models import VPRModel
from utils.errors import ConfigError, DataError
from utils.recall import hit_matrix

GEM = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch", "GeM",
       "--model.agg_config", "{}", "--data.image_size", "[32, 32]"]
RUN = ["--num_workers", "0", "--device", "cpu", "--progress", "false", "--names", "[m]"]


@pytest.fixture(scope="module")
def roots(synthetic) -> dict:
    """The data roots of the tiny synthetic data: Pittsburgh, MSLS and the stand-ins' benchmarks_root."""
    return {"pitts_root": str(synthetic["pitts"]), "msls_root": str(synthetic["msls"]),
            "benchmarks_root": str(synthetic["benchmarks"])}


@pytest.fixture(scope="module")
def gem(tmp_path_factory) -> Path:
    """A bare state_dict of ResNet18 + GeM (any image size fits it)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gem") / "gem.pth"
    torch.save(VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32)).state_dict(), path)
    return path


def run_eval(gem, synthetic, out, benchmarks, *extra) -> dict:
    """eval.py in-process on the synthetic stand-ins; returns the record of the one model."""
    return eval_cli.main(["--checkpoint", str(gem), "--benchmarks", json.dumps(benchmarks), "--data.pitts_root",
                          str(synthetic["pitts"]), "--data.msls_root", str(synthetic["msls"]), "--data.benchmarks_root",
                          str(synthetic["benchmarks"]), "--out_dir", str(out), *GEM, *RUN, *map(str, extra)])["m"]


def newest(out: Path) -> Path:
    return max(out.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


# ------------------------------------------------------------------ every benchmark, read in its own format
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_benchmark_reads_its_stand_in_with_its_protocol_and_counts(name, roots):
    dataset = build_eval_set(name, roots)
    protocol = dataset.protocol
    benchmark = BENCHMARKS[name]
    assert protocol["benchmark"] == name and protocol["title"] == benchmark.title
    assert protocol["citation"] == benchmark.citation and protocol["protocol"] == benchmark.protocol
    assert protocol["scoring"] == benchmark.scoring and dataset.labelled == (benchmark.scoring == "recall")
    assert len(dataset.ground_truth) == dataset.num_queries and all(Path(p).is_file() for p in dataset.images)
    expected = next((standin_counts(root, name) for root in map(Path, [*roots.values(), *(
        Path(roots["benchmarks_root"]) / s for s in benchmark.subfolders)]) if standin_counts(root, name)), None)
    if benchmark.counts is None:  # not published: nothing to check, and the record says so
        assert protocol["expected_counts"] is None and not protocol["counts_checked"]
    else:
        assert protocol["synthetic"] and protocol["counts_checked"]
        assert tuple(protocol["expected_counts"]) == expected == (dataset.num_references, dataset.num_queries)
    if dataset.labelled:
        assert any(len(g) for g in dataset.ground_truth)
    else:
        assert not any(len(g) for g in dataset.ground_truth)


def test_published_ground_truth_files_are_the_positives_used(roots):
    root = Path(roots["benchmarks_root"])
    nordland = build_eval_set("nordland", roots)
    published = np.load(root / "nordland_vprbench" / "Nordland_gt.npy", allow_pickle=True)
    assert [g.tolist() for g in nordland.ground_truth] == [np.asarray(p).tolist() for p in published]
    # query i's positives are the frames 10 i - 1 .. 10 i + 1 of the sequence (VPR-Bench's +-1 frame)
    assert nordland.ground_truth[1].tolist() == [9, 10, 11] and nordland.ground_truth[0].tolist() == [0, 1]
    assert [Path(p).relative_to(root / "nordland_vprbench").as_posix() for p in nordland.database_paths[:2]] == [
        "ref/0000000.jpg", "ref/0000001.jpg"]
    sped = build_eval_set("sped", roots)
    assert np.load(root / "sped_vprbench" / "SPED_gt.npy").shape == (sped.num_queries, 1)
    assert [g.tolist() for g in sped.ground_truth] == [[i] for i in range(sped.num_queries)]
    # the downloader's SPED (fake coordinates 1 km apart) gives the same exact match
    downloader = build_eval_set("sped", {"sped_root": str(root / "sped")})
    assert [g.tolist() for g in downloader.ground_truth] == [[i] for i in range(downloader.num_queries)]
    # the downloader's Nordland: +-10 frames through its fake coordinates (25 / 10.5 m a frame)
    frames = build_eval_set("nordland_10frames", roots)
    frame_of = lambda p: int(Path(p).name.split("@")[7])
    query = frame_of(frames.query_paths[30])
    assert sorted(frame_of(frames.database_paths[j]) for j in frames.ground_truth[30]) == list(range(query - 10, query + 11))


def test_published_object_arrays_run_no_pickled_code(roots, tmp_path):
    root = tmp_path / "nordland"
    shutil.copytree(Path(roots["benchmarks_root"]) / "nordland_vprbench", root)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    with open(root / "Nordland_gt.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        pickle.dump(Evil(), f)
    with pytest.raises(DataError, match=r"nordland: .*Nordland_gt.npy holds pickled objects other than numpy arrays.*"
                                         r"SALAD authors' github.com/serizba/salad, datasets/Nordland/"):
        build_eval_set("nordland", {"nordland_root": root})
    assert not marker.exists()


# ------------------------------------------------------------------ counts checked, with the likely cause
def test_a_count_mismatch_names_both_counts_and_the_likely_cause(roots, tmp_path, capsys):
    swapped = tmp_path / "tokyo247"
    shutil.copytree(Path(roots["benchmarks_root"]) / "tokyo247", swapped)
    test = swapped / "images" / "test"
    (test / "database").rename(test / "tmp")
    (test / "queries").rename(test / "database")
    (test / "tmp").rename(test / "queries")
    with pytest.raises(DataError, match=r"tokyo247: .* holds 6 database images and 20 queries, but the synthetic "
                                         r"stand-in written with 20 database images and 6 queries: likely database "
                                         r"and queries swapped"):
        build_eval_set("tokyo247", {"tokyo247_root": swapped})
    # a real copy (no stand-in file) is checked against the published counts
    real = tmp_path / "nordland"
    shutil.copytree(Path(roots["benchmarks_root"]) / "nordland_vprbench", real)
    (real / STANDIN_FILE).unlink()
    with pytest.raises(DataError, match=r"nordland: .* holds 60 database images and 6 queries, but the published "
                                         r"Nordland \(VPR-Bench\) has 27,592 database images and 2,760 queries .*"
                                         r"27,532 database images missing, 2,754 queries missing.*check_counts false"):
        build_eval_set("nordland", {"nordland_root": real})
    # another published version of the set is named
    nordland = BENCHMARKS["nordland"]
    assert "the 27,592-query version: VPR-datasets-downloader's Nordland" in count_error(
        nordland, (27_592, 27_592), nordland.counts, real, False)
    assert "VPR-Bench's Nordland with 2,760 queries" in count_error(
        BENCHMARKS["nordland_10frames"], (27_592, 2_760), BENCHMARKS["nordland_10frames"].counts, real, False)
    assert "every query of msls_val_qImages.npy" in count_error(
        BENCHMARKS["msls_val"], (18_871, 747), BENCHMARKS["msls_val"].counts, real, False)
    assert count_error(nordland, (27_592, 2_760), nordland.counts, real, False) == ""
    # evaluated anyway on request, and the record says the counts were not checked
    dataset = build_eval_set("nordland", {"nordland_root": real}, check_counts=False)
    assert "note: nordland:" in capsys.readouterr().err
    assert not dataset.protocol["counts_checked"] and dataset.protocol["expected_counts"] == [27_592, 2_760]


def test_counts_not_yet_verified_against_the_published_files_never_stop_a_run(roots, tmp_path, capsys):
    # Tokyo 24/7's 75,984 / 315 come from the papers, not from files compared here: a copy with other counts
    # is evaluated with a note, and the results say its counts were not checked
    assert not BENCHMARKS["tokyo247"].counts_verified and BENCHMARKS["nordland"].counts_verified
    real = tmp_path / "tokyo247"
    shutil.copytree(Path(roots["benchmarks_root"]) / "tokyo247", real)
    (real / STANDIN_FILE).unlink()
    dataset = build_eval_set("tokyo247", {"tokyo247_root": real})
    err = capsys.readouterr().err
    assert "note: tokyo247:" in err and "75,984 database images and 315 queries" in err and "not yet verified" in err
    assert not dataset.protocol["counts_checked"] and dataset.protocol["expected_counts"] == [75_984, 315]


# ------------------------------------------------------------------ roots
def test_a_benchmark_root_comes_from_its_setting_its_variable_or_benchmarks_root(roots, monkeypatch, tmp_path):
    base = Path(roots["benchmarks_root"])
    monkeypatch.setenv("ST_LUCIA_ROOT", str(base / "st_lucia"))
    monkeypatch.setenv("VPR_BENCHMARKS_ROOT", str(base))
    found = data_roots(tokyo247_root=str(tmp_path / "mine"))
    assert found["tokyo247_root"] == str(tmp_path / "mine") and found["st_lucia_root"] == str(base / "st_lucia")
    assert found["benchmarks_root"] == str(base) and found["svox_root"] is None
    # a root not set explicitly is found under benchmarks_root by the downloader's folder name
    assert build_eval_set("svox_night", found).root == base / "svox"
    assert build_eval_set("nordland_10frames", found).root == base / "nordland"
    monkeypatch.delenv("VPR_BENCHMARKS_ROOT")
    with pytest.raises(ConfigError, match=r"svox_rain needs svox_root: set --data.svox_root \(or the SVOX_ROOT "
                                          r"environment variable\), or --data.benchmarks_root \(or VPR_BENCHMARKS_ROOT\) "
                                          r"to a folder holding svox/"):
        build_eval_set("svox_rain", data_roots())
    with pytest.raises(FileNotFoundError, match=r"eynsham: not found under --data.benchmarks_root .*tried .*eynsham.*"
                                                r"--data.eynsham_root"):
        build_eval_set("eynsham", {"benchmarks_root": str(tmp_path)})
    # the settings exist on the command line, as for every other data root
    module = VPRDataModule(sped_root="/x", benchmarks_root="/y", synthetic=False)
    assert module.roots()["sped_root"] == "/x" and module.roots()["benchmarks_root"] == "/y"


def test_training_refuses_a_set_without_labels_and_expands_suites(synthetic):
    with pytest.raises(ConfigError, match=r"\['msls_test'\] have no public labels.*eval.py"):
        VPRDataModule(val_sets=["msls_test"])
    assert VPRDataModule(test_sets=["suite:mixvpr"]).test_set_names == ["pitts250k_test", "pitts30k_test", "msls_val"]
    with pytest.raises(ConfigError, match=r"unknown suite 'suite:nope'; choose one of \['suite:mixvpr'"):
        expand_benchmarks(["suite:nope"])


# ------------------------------------------------------------------ suites, saved results, the MSLS challenge
def test_suite_boq_runs_end_to_end_in_the_papers_table_layout_with_saved_results(gem, synthetic, tmp_path):
    record = run_eval(gem, synthetic, tmp_path, ["suite:boq"], "--save_descriptors", "float16",
                      "--save_predictions", "3")
    suite = SUITES["boq"]
    assert list(record["benchmarks"]) == suite.benchmarks
    out = newest(tmp_path)
    lines = (out / "recalls.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    titled = [c for c in header if "R@1" in c and "R@10" not in c]
    assert titled == [f"{title} [{i}] R@1" for i, (_, title) in enumerate(suite.columns, 1)]
    assert header[2:6] == ["MSLS-val [1] R@1", "R@5", "R@10", "R@20"]  # BoQ's K: 1, 5, 10, 20
    assert any(line.startswith("[4] Nordland*: positives are the database images Nordland_gt.npy lists")
               and "a positive within +-1 frame" in line and "A synthetic stand-in" in line for line in lines)
    assert any(line.startswith("[5] Nordland**: positives are database images within 25 m") for line in lines)
    assert "The table of BoQ (Ali-bey et al., CVPR 2024), the 'BoQ with ResNet50 backbone' table" in lines[4]
    saved = json.loads((out / "recalls.json").read_text())["protocol"]["benchmarks"]
    assert saved["nordland"]["benchmark"] == "nordland" and saved["nordland"]["synthetic"]
    # descriptors in float16 with their image lists; predictions with distances and positive flags
    sped = build_eval_set("sped", {"benchmarks_root": synthetic["benchmarks"]})
    folder = out / "descriptors" / "m" / "sped"
    database, queries = np.load(folder / "database.npy"), np.load(folder / "queries.npy")
    assert database.dtype == np.float16 and database.shape == (sped.num_references, 256)
    assert (folder / "queries.txt").read_text().splitlines() == sped.query_paths and len(queries) == sped.num_queries
    predictions = np.load(out / "predictions" / "m" / "sped.npz")
    assert predictions["predictions"].shape == predictions["distances"].shape == (sped.num_queries, 3)
    assert (predictions["positive"] == hit_matrix(predictions["predictions"], sped.ground_truth, 6)).all()
    assert predictions["query_images"].tolist() == sped.query_paths
    recall1 = record["benchmarks"]["sped"]["recall"]["1"]
    assert predictions["positive"][:, 0].mean() == pytest.approx(recall1)


def test_msls_challenge_gives_the_prediction_file_in_the_published_format_and_no_recall(gem, synthetic, tmp_path):
    record = run_eval(gem, synthetic, tmp_path, ["msls_test", "msls_val"])
    challenge = record["benchmarks"]["msls_test"]
    assert challenge["recall"] is None and challenge["protocol"]["scoring"] == "predictions"
    dataset = build_eval_set("msls_test", {"msls_root": synthetic["msls"]})
    path = Path(challenge["challenge_file"])
    # as the MSLS authors' evaluate.py reads it: np.loadtxt(ndmin=2, dtype=str), a query key then its ranking
    rows = np.loadtxt(path, ndmin=2, dtype=str)
    query_keys = [Path(p).stem for p in dataset.query_paths]
    database_keys = [Path(p).stem for p in dataset.database_paths]
    assert rows[:, 0].tolist() == query_keys and rows.shape == (dataset.num_queries, 1 + 25)
    assert set(rows[:, 1:].ravel()) <= set(database_keys)
    assert all(len(set(r[1:])) == 25 for r in rows)
    check_challenge_file(path, query_keys, database_keys)
    lines = path.read_text().splitlines()
    assert lines[0] == " ".join(rows[0]) and all(" " not in key for key in query_keys)
    out = newest(tmp_path)
    notes = (out / "recalls.md").read_text()
    assert "MSLS-challenge" not in notes.splitlines()[0] and "MSLS-val R@1" in notes.splitlines()[0]
    assert f"MSLS-challenge: no public labels, so no recall here: m's prediction file for the challenge server is {path}" in notes
    assert [r.split(",")[4:5] + r.split(",")[-1:] for r in (out / "recalls.csv").read_text().splitlines()[1:]] == [
        ["msls_test", ""], ["msls_val", f"{100 * record['benchmarks']['msls_val']['recall']['100']:.2f}"]]
    with pytest.raises(ValueError, match="every query key once"):
        check_challenge_file(path, query_keys + ["missing"], database_keys)


# ------------------------------------------------------------------ MSLS-val with every query
def test_msls_val_all_counts_every_non_panorama_query_as_the_downloader_does(synthetic, tmp_path):
    root = tmp_path / "msls"
    shutil.copytree(synthetic["msls"], root, symlinks=True)
    raw = root / "train_val" / "sf" / "query" / "raw.csv"
    lines = raw.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",True"  # the first sf query is a panorama
    raw.write_text("\n".join(lines) + "\n")
    every = build_eval_set("msls_val_all", {"msls_root": root})
    official = build_eval_set("msls_val", {"msls_root": root})
    q_images = np.load(root / "msls_val_qImages.npy")
    panorama = str(root / "train_val" / "sf" / "query" / "images" / f"{lines[1].split(',')[1]}.jpg")
    assert every.num_queries == len(q_images) - 1 > official.num_queries  # all but the panorama, positives or not
    assert panorama not in every.query_paths and every.num_references == official.num_references
    without = {p for p, g in zip(every.query_paths, every.ground_truth) if not len(g)}
    assert without and without == set(every.query_paths) - set(official.query_paths)  # misses in the denominator
    # where a query has positives, they are the official ones (within 25 m, same city)
    by_path = {p: set(np.asarray(official.database_paths)[g]) for p, g in zip(official.query_paths, official.ground_truth)}
    for path, g in zip(every.query_paths, every.ground_truth):
        if str(path) in by_path:
            assert set(np.asarray(every.database_paths)[g]) == by_path[str(path)]


# ------------------------------------------------------------------ converters from the raw releases
def _image(path: Path, value: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 0, 0)).save(path, fmt)


def test_sped_converter_writes_the_vpr_bench_layout_and_the_published_files_format(tmp_path):
    raw = tmp_path / "SPEDTEST"
    for i in range(3):
        for part in ("ref", "query"):
            _image(raw / part / f"{i:07d}.jpg", i)
    convert_main(["sped", str(raw), str(tmp_path / "sped")])
    out = tmp_path / "sped"
    assert (out / "ref" / "0000001.jpg").samefile(raw / "ref" / "0000001.jpg")  # a link, not a copy
    assert np.load(out / "SPED_dbImages.npy").dtype.kind == "U" and np.load(out / "SPED_gt.npy").tolist() == [[0], [1], [2]]
    dataset = build_eval_set("sped", {"sped_root": out}, check_counts=False)
    assert [g.tolist() for g in dataset.ground_truth] == [[0], [1], [2]]
    with pytest.raises(ConfigError, match=r"exists and is not an empty folder"):
        convert_main(["sped", str(raw), str(out)])
    (raw / "query" / "0000002.jpg").unlink()
    with pytest.raises(DataError, match=r"should hold the same file names.*0000002.jpg"):
        convert_main(["sped", str(raw), str(tmp_path / "other")])


def test_nordland_converter_writes_the_downloaders_fake_coordinates(tmp_path):
    raw = tmp_path / "raw"
    names = [f"{i:05d}.png" for i in range(60)]
    for i, name in enumerate(names):
        for season in ("summer", "winter"):
            _image(raw / season / name, i, "PNG")
    (raw / "cleanImageNames.txt").write_text("\n".join(n for n in names if n != "00003.png") + "\n")
    convert_main(["nordland_10frames", str(raw), str(tmp_path / "nordland"), "--link", "symlink"])
    database = sorted((tmp_path / "nordland" / "images" / "test" / "database").iterdir())
    assert len(database) == 59 and all(p.is_symlink() for p in database)
    assert (tmp_path / "nordland" / "images" / "test" / "database" / "@0@00002.4@@@@@1@@@@@@@@.png").resolve() == \
        (raw / "summer" / "00001.png").resolve()
    frame_4 = tmp_path / "nordland" / "images" / "test" / "queries" / "@0@00007.1@@@@@3@@@@@@@@.png"
    assert frame_4.resolve() == (raw / "winter" / "00004.png").resolve()  # 00003 left out: frames renumbered
    dataset = build_eval_set("nordland_10frames", {"nordland_10frames_root": tmp_path / "nordland"}, check_counts=False)
    frame_of = lambda p: int(Path(p).name.split("@")[7])
    assert sorted(frame_of(dataset.database_paths[j]) for j in dataset.ground_truth[15]) == list(range(5, 26))


def test_amstertime_converter_pairs_each_query_with_its_database_image(tmp_path):
    raw = tmp_path / "raw"
    for pair in ("0", "1", "2"):
        _image(raw / "new" / f"{pair}.png", int(pair), "PNG")
        _image(raw / "old" / f"{pair}.jpg", int(pair))
    convert_main(["amstertime", str(raw), str(tmp_path / "amstertime")])
    dataset = build_eval_set("amstertime", {"amstertime_root": tmp_path / "amstertime"}, check_counts=False)
    assert [Path(p).name for p in dataset.database_paths] == [f"@0@{1000 * i}@@@@@{i}@@@@@@@@.png" for i in range(3)]
    assert [g.tolist() for g in dataset.ground_truth] == [[0], [1], [2]]


def _msls_raw(root: Path) -> None:
    """An MSLS release of one city: 4 database and 3 query frames along a street, with every CSV."""
    rows = {"database": [(0, 0.0), (1, 10.0), (2, 200.0), (3, 20.0)], "query": [(0, 5.0), (1, 500.0), (2, 18.0)]}
    for part, frames in rows.items():
        folder = root / "train_val" / "zurich" / part
        folder.mkdir(parents=True)
        keys = [f"{part[0]}key{i}" for i, _ in frames]
        pano = ["False"] * len(frames)
        subtask = ["True"] * len(frames)
        if part == "database":
            pano[3] = "True"  # a panorama: left out
        else:
            subtask[2] = "False"  # not in the subtask: left out
        (folder / "postprocessed.csv").write_text(",key,easting,northing,night,view_direction\n" + "".join(
            f"{i},{k},{465000 + x},5247000.0,False,Forward\n" for (i, x), k in zip(frames, keys)))
        (folder / "raw.csv").write_text(",key,lon,lat,ca,captured_at,pano\n" + "".join(
            f"{i},{k},8.5,47.3,0.0,1500000000000,{p}\n" for (i, _), k, p in zip(frames, keys, pano)))
        (folder / "seq_info.csv").write_text(",key,sequence_key,frame_number\n" + "".join(
            f"{i},{k},seq{part},{i}\n" for (i, _), k in zip(frames, keys)))
        (folder / "subtask_index.csv").write_text(",all,s2w,w2s,o2n,n2o,d2n,n2d\n" + "".join(
            f"{i},{s},False,False,False,False,False,False\n" for (i, _), s in zip(frames, subtask)))
        for k in keys:
            _image(folder / "images" / f"{k}.jpg", 1)


def test_msls_converter_computes_the_official_val_ground_truth_for_any_city(tmp_path):
    raw = tmp_path / "msls"
    _msls_raw(raw)
    convert_main(["msls_val", str(raw), str(tmp_path / "zurich"), "--cities", "[zurich]"])
    out = tmp_path / "zurich"
    assert np.load(out / "msls_val_dbImages.npy").tolist() == [f"train_val/zurich/database/images/dkey{i}.jpg"
                                                              for i in range(3)]
    assert np.load(out / "msls_val_qImages.npy").tolist() == [f"train_val/zurich/query/images/qkey{i}.jpg" for i in range(2)]
    assert np.load(out / "msls_val_qIdx.npy").tolist() == [0]  # query 1 is 500 m from everything
    assert [p.tolist() for p in np.load(out / "msls_val_pIdx.npy", allow_pickle=True)] == [[0, 1]]
    dataset = build_eval_set("msls_val", {"msls_root": out}, check_counts=False)
    assert dataset.num_references == 3 and [g.tolist() for g in dataset.ground_truth] == [[0, 1]]
    with pytest.raises(ConfigError, match=r"apply to msls_val only"):
        convert_main(["sped", str(raw), str(tmp_path / "x"), "--cities", "[zurich]"])


# ------------------------------------------------------------------ the Pittsburgh splits in the downloader's layout
def test_pittsburgh_reads_the_downloaders_layout_with_the_same_positives(synthetic, tmp_path):
    from dataloaders.eval.pittsburgh import read_db_struct
    db = read_db_struct(synthetic["pitts"] / "datasets" / "pitts30k_test.mat")
    root = tmp_path / "pitts30k"
    for part, names, utm, base in (("database", db["db_images"], db["utm_db"], synthetic["pitts"]),
                                   ("queries", db["q_images"], db["utm_q"], synthetic["pitts"] / "queries_real")):
        for i, (name, (east, north)) in enumerate(zip(names, utm)):
            target = root / "images" / "test" / part / f"@{east:.2f}@{north:.2f}@17@T@@@@{i:05d}@@@@@@@.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(base / name)
    shutil.copy(synthetic["pitts"] / STANDIN_FILE, root)
    folder = build_eval_set("pitts30k_test", {"benchmarks_root": tmp_path})
    mat = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]})
    assert folder.root == root and folder.protocol["benchmark"] == "pitts30k_test"
    positives = lambda d: {str(Path(q).resolve()): {str(Path(d.database_paths[j]).resolve()) for j in g}
                           for q, g in zip(d.query_paths, d.ground_truth)}
    assert positives(folder) == positives(mat) and any(positives(mat).values())


# ------------------------------------------------------------------ a folder-format set in the embedded data
def test_the_embedded_data_holds_a_folder_set_that_folder_specs_open(gem, synthetic, tmp_path):
    from dataloaders.synthetic import set_folder
    folder = set_folder(synthetic["benchmarks"].parent.parent, "tiny", 0) / "benchmarks" / "tokyo247"
    assert folder == synthetic["benchmarks"] / "tokyo247"
    record = eval_cli.main(["--checkpoint", str(gem), "--benchmarks", f"[folder:{folder}]", "--data.synthetic", "true",
                            "--data.synthetic_dir", str(synthetic["benchmarks"].parent.parent), "--data.synthetic_scale",
                            "tiny", "--out_dir", str(tmp_path), *GEM, *RUN])["m"]
    result = record["benchmarks"]["tokyo247"]
    assert result["protocol"]["threshold_m"] == 25.0 and result["protocol"]["benchmark"] == ""  # a generic folder set
    assert result["num_references"] == 20 and 0 < result["recall"]["100"] <= 1
