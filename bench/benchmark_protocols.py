"""Our benchmarks against the authors' own files and evaluation code, on the same descriptors.

    python bench/benchmark_protocols.py --salad /path/to/salad [--vpr_methods_evaluation /path/to/it] \\
        [--mixvpr_msls_val /path/to/MixVPR/datasets/msls_val] [--work /tmp/protocols]

``--salad`` is a copy of github.com/serizba/salad (fetched outside this repository, never committed): its
``datasets/`` folder (Nordland, SPED, msls_test, msls_val ground-truth files) and its evaluation code
(``utils/validation.py``: ``get_validation_recalls``; ``dataloaders/val/MapillaryTestDataset.py``:
``MSLSTest.save_predictions``, the MSLS challenge writer). ``--vpr_methods_evaluation`` is a copy of
github.com/gmberton/VPR-methods-evaluation (``test_dataset.py``: positives of a folder set by its radius).

For each set whose files are there, the images are replaced by placeholders at the listed paths (hard links
to one small JPEG: the check is about lists, positives and recall, not pixels), and:
- counts: our benchmark opens the set with its pinned counts checked, and they equal the files' lengths;
- positives: ours equal the published ground truth, query by query (or the authors' code's, for folder sets);
- recall: on seeded descriptors (each query near a random positive, or near a random database image),
  our recall@K equals the authors' ``get_validation_recalls`` on the same descriptors, exactly;
- the MSLS challenge file: ours is byte-equal to SALAD's writer's on the same predictions;
- the SPED converter: from a raw SPEDTEST layout of the published names, it writes the published files.
Files at least 4 MiB are left out of the snapshots this was written against (e.g. MixVPR's
``msls_val_dbImages.npy``): a missing database list is generated with the published count and says so.
"""
import argparse
import importlib.util
import io
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.convert import CONVERTERS  # noqa: E402
from dataloaders.eval import build_eval_set  # noqa: E402
from dataloaders.eval.msls_test import CHALLENGE_TOP, write_challenge_file  # noqa: E402
from models.evaluation import evaluation_recalls  # noqa: E402

K = (1, 5, 10, 15, 20, 25)  # SALAD's eval.py


def load_module(path: Path, name: str):
    """The module at ``path`` (the authors' code, imported from its file, not copied). Their code calls
    ``np.in1d``, which numpy 2.x removed: it is given numpy's ``isin`` of the flattened input, what in1d was."""
    if not hasattr(np, "in1d"):
        np.in1d = lambda a, b, **kw: np.isin(np.ravel(a), b, **kw)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def placeholders(root: Path, paths, jpeg: bytes) -> None:
    """A hard link to one small JPEG at each of ``paths`` (relative to ``root``)."""
    source = root / ".placeholder.jpg"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(jpeg)
    for p in paths:
        target = root / str(p)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.hardlink_to(source)


def seeded_descriptors(ground_truth, num_references: int, seed: int = 0, dim: int = 32):
    """(database, queries) float32 unit rows: query i near a random positive with probability 0.6, else near a
    random database image, so that recall is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    db = rng.standard_normal((num_references, dim)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    targets = np.array([rng.choice(g) if len(g) and rng.random() < 0.6 else rng.integers(num_references)
                        for g in ground_truth])
    q = db[targets] + 0.15 * rng.standard_normal((len(targets), dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return db, q.astype(np.float32)


def compare_recall(dataset, authors_recalls) -> dict:
    """Our recall@K and the authors' on the same descriptors of ``dataset``."""
    db, q = seeded_descriptors(dataset.ground_truth, dataset.num_references)
    ours = evaluation_recalls(np.concatenate([db, q]), dataset, K)[0]
    theirs = authors_recalls(r_list=db, q_list=q, k_values=list(K), gt=dataset.ground_truth, print_results=False)
    return {"ours": {k: round(100 * ours[k], 4) for k in K}, "theirs": {k: round(100 * float(theirs[k]), 4) for k in K},
            "equal": all(ours[k] == theirs[k] for k in K)}


def vpr_bench_set(salad: Path, work: Path, prefix: str, name: str, jpeg: bytes) -> tuple:
    """Our ``name`` opened on placeholders at the paths of SALAD's ``<prefix>_*.npy``; (dataset, published gt)."""
    files = salad / "datasets" / prefix
    root = work / name
    db, q = np.load(files / f"{prefix}_dbImages.npy"), np.load(files / f"{prefix}_qImages.npy")
    placeholders(root, [*db, *q], jpeg)
    for f in files.glob(f"{prefix}_*.npy"):
        target = root / f.name
        if not target.exists():
            shutil.copyfile(f, target)
    gt = np.load(files / f"{prefix}_gt.npy", allow_pickle=True)
    return build_eval_set(name, {f"{name}_root": root}), (len(db), len(q)), gt


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--salad", type=Path, required=True, help="a copy of github.com/serizba/salad")
    parser.add_argument("--vpr_methods_evaluation", type=Path, default=None,
                        help="a copy of github.com/gmberton/VPR-methods-evaluation (folder-set positives)")
    parser.add_argument("--mixvpr_msls_val", type=Path, default=None,
                        help="MixVPR's datasets/msls_val (default: the salad copy's, the same files)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/benchmark_protocols"),
                        help="where the placeholder layouts are built (a new folder)")
    args = parser.parse_args(argv)
    if args.work.exists():
        raise SystemExit(f"{args.work} exists: give a new --work folder")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    authors = load_module(args.salad / "utils" / "validation.py", "salad_validation").get_validation_recalls
    report = {}

    for prefix, name in (("Nordland", "nordland"), ("SPED", "sped")):
        if not (args.salad / "datasets" / prefix / f"{prefix}_gt.npy").is_file():
            report[name] = "published files absent"
            continue
        start = time.perf_counter()
        dataset, counts, gt = vpr_bench_set(args.salad, args.work, prefix, name, jpeg)
        same = all(np.array_equal(np.sort(ours), np.sort(np.asarray(theirs).ravel()))
                   for ours, theirs in zip(dataset.ground_truth, gt)) and len(gt) == dataset.num_queries
        report[name] = {"counts": (dataset.num_references, dataset.num_queries), "published_counts": counts,
                        "counts_checked": dataset.protocol["counts_checked"], "positives_equal": same,
                        "recall": compare_recall(dataset, authors), "seconds": round(time.perf_counter() - start, 1)}

    msls_test = args.salad / "datasets" / "msls_test"
    if (msls_test / "msls_test_dbImages.npy").is_file():
        root = args.work / "msls"
        db = np.load(msls_test / "msls_test_dbImages.npy", allow_pickle=True)
        q = np.load(msls_test / "msls_test_qImages.npy", allow_pickle=True)
        placeholders(root, [*db, *q], jpeg)
        for f in msls_test.glob("*.npy"):
            shutil.copyfile(f, root / f.name)
        dataset = build_eval_set("msls_test", {"msls_root": root})
        rng = np.random.default_rng(1)
        predictions = np.stack([rng.choice(len(db), CHALLENGE_TOP, replace=False) for _ in range(len(q))])
        ours = write_challenge_file(dataset, predictions, args.work / "ours.txt")
        writer = load_module(args.salad / "dataloaders" / "val" / "MapillaryTestDataset.py", "salad_msls_test").MSLSTest
        writer.save_predictions(SimpleNamespace(qImages=q, dbImages=db), predictions, str(args.work / "theirs.txt"))
        report["msls_test"] = {"counts": (dataset.num_references, dataset.num_queries), "published_counts": (len(db), len(q)),
                               "counts_checked": dataset.protocol["counts_checked"],
                               "challenge_file_byte_equal": ours.read_bytes() == (args.work / "theirs.txt").read_bytes()}

    msls_val = args.mixvpr_msls_val or args.salad / "datasets" / "msls_val"
    if (msls_val / "msls_val_pIdx.npy").is_file():
        root = args.work / "msls_val"
        root.mkdir(parents=True)
        q_images, q_idx = np.load(msls_val / "msls_val_qImages.npy"), np.load(msls_val / "msls_val_qIdx.npy")
        p_idx = np.load(msls_val / "msls_val_pIdx.npy", allow_pickle=True)
        if (msls_val / "msls_val_dbImages.npy").is_file():
            db_images, generated = np.load(msls_val / "msls_val_dbImages.npy"), False
        else:  # left out of the snapshot (>= 4 MiB): the published count, generated paths
            db_images = np.array([f"train_val/cph/database/images/generated{i:05d}.jpg" for i in range(18_871)])
            generated = True
        np.save(root / "msls_val_dbImages.npy", db_images)
        for f in ("msls_val_qImages.npy", "msls_val_qIdx.npy", "msls_val_pIdx.npy"):
            shutil.copyfile(msls_val / f, root / f)
        placeholders(root, [*db_images, *q_images[q_idx]], jpeg)
        dataset = build_eval_set("msls_val", {"msls_root": root})
        same = all(np.array_equal(ours, np.asarray(theirs)) for ours, theirs in zip(dataset.ground_truth, p_idx))
        report["msls_val"] = {"counts": (dataset.num_references, dataset.num_queries),
                              "published_counts": (len(db_images), len(q_idx)), "database_list_generated": generated,
                              "positives_equal": same, "recall": compare_recall(dataset, authors)}

    sped = args.salad / "datasets" / "SPED"
    if (sped / "SPED_gt.npy").is_file():
        raw = args.work / "SPEDTEST"
        names = [Path(p).name for p in np.load(sped / "SPED_dbImages.npy")]
        placeholders(raw, [f"{part}/{n}" for part in ("ref", "query") for n in names], jpeg)
        CONVERTERS["sped"](raw, args.work / "sped_converted")
        report["sped_converter"] = {f: bool(np.array_equal(np.load(sped / f), np.load(args.work / "sped_converted" / f))
                                           and np.load(sped / f).dtype == np.load(args.work / "sped_converted" / f).dtype)
                                    for f in ("SPED_dbImages.npy", "SPED_qImages.npy", "SPED_gt.npy")}

    if args.vpr_methods_evaluation is not None:
        # nordland_10frames: the downloader's names from our converter, positives by VPR-methods-evaluation's code
        raw = args.work / "nordland_raw"
        names = [f"{i:07d}.png" for i in range(27_592)]
        placeholders(raw, [f"{season}/{n}" for season in ("summer", "winter") for n in names], jpeg)
        (raw / "cleanImageNames.txt").write_text("\n".join(names) + "\n")
        CONVERTERS["nordland_10frames"](raw, args.work / "nordland_10frames")
        dataset = build_eval_set("nordland_10frames", {"nordland_10frames_root": args.work / "nordland_10frames"})
        theirs = load_module(args.vpr_methods_evaluation / "test_dataset.py", "vme_test_dataset").TestDataset(
            str(args.work / "nordland_10frames" / "images" / "test" / "database"),
            str(args.work / "nordland_10frames" / "images" / "test" / "queries"), positive_dist_threshold=25)
        same = [p for p in theirs.database_paths] == dataset.database_paths and all(
            np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(dataset.ground_truth, theirs.get_positives()))
        frames = {len(g) for g in dataset.ground_truth[10:-10]}
        report["nordland_10frames"] = {"counts": (dataset.num_references, dataset.num_queries),
                                       "positives_equal_vpr_methods_evaluation": same,
                                       "positives_per_query_inside_the_sequence": sorted(frames),
                                       "recall": compare_recall(dataset, authors)}

    for name, result in report.items():
        print(f"{name}: {result}")
    return report


if __name__ == "__main__":
    main()
