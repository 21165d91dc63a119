"""No silently wrong recall: the descriptor cache knows the network that computed it and checks its files,
a model's NaN is an error naming it, the protocol a table states is the one read from the data, a failed
evaluation leaves nothing behind, and a checkpoint carries the preprocessing it was validated with."""
import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat, savemat

import eval as eval_cli
import retrieve
from dataloaders.eval import build_eval_set
from dataloaders.eval.registry import STANDIN_FILE
from main import main as train_main
from models import VPRModel, build_network, load_model
from tiny_cli import tiny_cli_args
from utils.errors import CheckpointError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
RESNET = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]"]
GEM = [*RESNET, "--model.agg_arch", "GeM", "--model.agg_config", "{}", "--data.image_size", "[32, 32]"]
RUN = ["--num_workers", "0", "--device", "cpu", "--progress", "false"]


def run_eval(checkpoint, out_dir, benchmarks, synthetic, *extra) -> dict:
    """eval.py in-process on the CPU; returns the record of the one model, named 'm'."""
    return eval_cli.main(["--checkpoint", str(checkpoint), "--benchmarks", json.dumps(benchmarks), "--names", "[m]",
                          "--data.pitts_root", str(synthetic["pitts"]), "--data.msls_root", str(synthetic["msls"]),
                          "--out_dir", str(out_dir), *RUN, *map(str, extra)])["m"]


def newest(out_dir: Path) -> Path:
    return max(out_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))



# ------------------------------------------------------------------------------ 1. the cache knows the network
def convap(s: int) -> list[str]:
    return [*RESNET, "--model.agg_arch", "ConvAP", "--model.agg_config",
            json.dumps({"out_channels": 8, "s1": s, "s2": s}), "--data.image_size", "[32, 32]"]


def test_cache_is_missed_when_the_pooling_size_changes(synthetic, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "convap.pth"  # ConvAP's pooling size holds no weights: one file fits both
    torch.save(VPRModel(backbone_arch="resnet18", agg_arch="ConvAP", agg_config={"out_channels": 8},
                        image_size=(32, 32)).state_dict(), weights)
    first = run_eval(weights, tmp_path, ["pitts30k_test"], synthetic, *convap(2))["benchmarks"]["pitts30k_test"]
    second = run_eval(weights, tmp_path, ["pitts30k_test"], synthetic, *convap(1))["benchmarks"]["pitts30k_test"]
    fresh = run_eval(weights, tmp_path, ["pitts30k_test"], synthetic, *convap(1),
                     "--cache", "false")["benchmarks"]["pitts30k_test"]
    assert not second["descriptors_cached"] and second["recall"] == fresh["recall"]
    assert (first["descriptor_dim"], second["descriptor_dim"]) == (32, 8)


def identity(**settings) -> str:
    from models.descriptor_cache import network_identity
    torch.manual_seed(0)
    return network_identity(build_network(**settings))


def test_network_identity_follows_every_setting_of_the_forward_pass(tiny_dinov2):
    from dataloaders.preprocessing import Preprocessing
    from models.descriptor_cache import network_identity
    from tiny_cli import tiny_vit

    conv = lambda s1, s2: identity(backbone_arch="resnet18", agg_arch="ConvAP", image_size=(32, 32),
                                   agg_config={"out_channels": 8, "s1": s1, "s2": s2})
    assert len({conv(2, 2), conv(1, 1), conv(2, 1)}) == 3
    vit = lambda agg, **backbone: identity(**{**tiny_vit(agg), "backbone_config": {
        **tiny_vit(agg)["backbone_config"], **backbone}})
    assert vit("BoQ", norm_layer=False) != vit("BoQ", norm_layer=True)
    assert vit("SALAD", return_token=True) != vit("SALAD", return_token=False)
    # two builds of the same settings and weights: the same identity (no id() or address in it)
    assert conv(2, 2) == conv(2, 2) and vit("SALAD") == vit("SALAD")
    torch.manual_seed(0)
    net = build_network("resnet18", agg_arch="GeM", image_size=(32, 32))
    before = network_identity(net)
    net.preprocessing = Preprocessing((32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert network_identity(net) != before


def test_cache_key_follows_the_preprocessing_applied(tmp_path):
    from dataloaders.preprocessing import Preprocessing
    from models.descriptor_cache import cache_key
    image = tmp_path / "a.jpg"
    image.write_bytes(b"a")
    key = lambda record: cache_key("net", [str(image)], record, "32")
    base = Preprocessing((32, 32))
    others = [base.with_size((48, 32)), Preprocessing((32, 32), mean=(0.5, 0.5, 0.5)),
              Preprocessing((32, 32), std=(0.5, 0.5, 0.5))]
    assert all(key(o.as_dict()) != key(base.as_dict()) for o in others)
    assert key({**base.as_dict(), "resize": "shorter_side"}) != key(base.as_dict())
    # a record of a resize policy this project does not implement is refused, not evaluated another way
    with pytest.raises(ConfigError, match="resize='shorter_side'.*resize='exact'"):
        Preprocessing.from_dict({**base.as_dict(), "resize": "shorter_side"})


# ------------------------------------------------------------------------------ 2. cached files are checked
def _rewrite(npy: Path, array: np.ndarray, checksum: bool) -> None:
    """Write ``array`` over the cached file; with ``checksum`` also its record (shape, sha256 of the bytes):
    only the content checks can tell."""
    np.save(npy, array)
    if checksum:
        meta_path = npy.with_suffix(".json")
        meta = json.loads(meta_path.read_text())
        meta.update(shape=list(array.shape), sha256=hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest())
        meta_path.write_text(json.dumps(meta))


def _nan_rows(a):
    a = a.copy()
    a[31:36] = np.nan  # five queries
    return a


CORRUPTIONS = {
    "wrong shape": (lambda a: np.ascontiguousarray(a[:, :100]), False, "shape"),
    "1-D array": (lambda a: np.ascontiguousarray(a[:, 0]), False, "shape"),
    "float64": (lambda a: a.astype(np.float64), True, "float64"),
    "one value changed": (lambda a: a + np.eye(*a.shape, dtype=np.float32) * 1e-3, False, "sha256"),
    "NaN rows, checksum rewritten": (_nan_rows, True, "non-finite"),
    "not normalised, checksum rewritten": (lambda a: 2 * a, True, "norm 1"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_cached_file_that_fails_a_check_is_embedded_again_with_a_note(corruption, gem_weights, synthetic, tmp_path,
                                                                     capsys):
    change, checksum, why = CORRUPTIONS[corruption]
    first = run_eval(gem_weights, tmp_path, ["pitts30k_test"], synthetic, *GEM)["benchmarks"]["pitts30k_test"]
    (npy,) = (tmp_path / "descriptors").glob("*.npy")
    _rewrite(npy, change(np.load(npy)), checksum)
    capsys.readouterr()
    again = run_eval(gem_weights, tmp_path, ["pitts30k_test"], synthetic, *GEM)["benchmarks"]["pitts30k_test"]
    assert not again["descriptors_cached"] and again["recall"] == first["recall"]
    assert (again["num_queries"], again["skipped_queries"], again["descriptor_dim"]) == (10, 0, 256)
    (row,) = csv.DictReader((newest(tmp_path) / "recalls.csv").open())
    assert row["descriptor_dim"] == "256"  # the dimension searched
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(npy) in notes[0] and why in notes[0] and notes[0].endswith("embedding again")
    # the file written again is trusted again
    assert run_eval(gem_weights, tmp_path, ["pitts30k_test"], synthetic, *GEM)["benchmarks"]["pitts30k_test"][
        "descriptors_cached"]


@pytest.fixture(scope="module")
def nan_weights(gem_weights, tmp_path_factory) -> Path:
    """The GeM weights with NaN in one tensor (a run that diverged)."""
    state = torch.load(gem_weights)
    state["backbone.model.layer3.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "diverged.pth"
    torch.save(state, path)
    return path


def test_model_with_nan_weights_is_an_error_naming_it_in_every_entry_point(nan_weights, synthetic, tmp_path):
    from models.inference import embed
    match = r"diverged.pth.*non-finite \(NaN or inf\) descriptors .*its weights hold NaN or inf \(1 of"
    with pytest.raises(CheckpointError, match=match):
        run_eval(nan_weights, tmp_path / "eval", ["pitts30k_test"], synthetic, *GEM)
    images = synthetic["pitts"] / "000"
    with pytest.raises(CheckpointError, match=match):
        retrieve.main(["--checkpoint", str(nan_weights), "--database", str(images), "--queries", str(images),
                       "--out_dir", str(tmp_path / "retrieve"), *GEM, *RUN])
    net = load_model(nan_weights, backbone_arch="resnet18", agg_arch="GeM", image_size=[32, 32])
    with pytest.raises(CheckpointError, match=r"the VPRNet: non-finite .*weights hold NaN"):
        embed(net, images, progress=False)


# ------------------------------------------------------------------------------ 3. the protocol read from the data
def pittsburgh_with(root: Path, synthetic: dict, split: str, **fields) -> Path:
    """A Pittsburgh root whose ``split`` .mat has ``fields`` replaced (posDistThr=..., dbImageFns=...); the
    images are those of the synthetic set (linked)."""
    root.mkdir()
    for part in ("000", "queries_real"):
        (root / part).symlink_to(synthetic["pitts"] / part)
    mat = loadmat(str(synthetic["pitts"] / "datasets" / f"{split}.mat"))
    for field, value in fields.items():
        mat["dbStruct"][field][0, 0] = value
    (root / "datasets").mkdir()
    savemat(str(root / "datasets" / f"{split}.mat"), {"dbStruct": mat["dbStruct"]})
    shutil.copy(synthetic["pitts"] / STANDIN_FILE, root)  # still the stand-in: its own counts are checked
    return root


def test_positive_threshold_is_read_from_the_mat_and_stated_in_the_results(gem_weights, synthetic, tmp_path):
    root = pittsburgh_with(tmp_path / "pitts", synthetic, "pitts30k_test", posDistThr=np.array([[40.0]]))
    mat = root / "datasets" / "pitts30k_test.mat"
    record = eval_cli.main(["--checkpoint", str(gem_weights), "--benchmarks", "[pitts30k_test, msls_val]",
                            "--data.pitts_root", str(root), "--data.msls_root", str(synthetic["msls"]), "--names",
                            "[m]", "--out_dir", str(tmp_path / "eval"), *GEM, *RUN])["m"]["benchmarks"]
    notes = (newest(tmp_path / "eval") / "recalls.md").read_text()
    assert f"Pitts30k-test: positives are database images within 40 m (posDistThr of {mat}); 30 database " \
           f"images, 10 queries." in notes
    # the positives used (40 m) are stated; 25 m appears only as the published protocol's, beside them
    pitts_line = next(line for line in notes.splitlines() if line.startswith("Pitts30k-test: positives are"))
    assert "25 m" not in pitts_line.split(" Protocol: ")[0] and "Protocol: database images within 25 m" in pitts_line
    assert "MSLS-val: positives are the database images msls_val_pIdx.npy lists" in notes
    protocol = json.loads((newest(tmp_path / "eval") / "recalls.json").read_text())["protocol"]["benchmarks"]
    assert {k: protocol["pitts30k_test"][k] for k in ("positives", "source", "threshold_m", "num_references",
                                                      "num_queries", "benchmark", "synthetic", "counts_checked")} == {
        "positives": f"database images within 40 m (posDistThr of {mat})", "source": str(mat), "threshold_m": 40.0,
        "num_references": 30, "num_queries": 10, "benchmark": "pitts30k_test", "synthetic": True, "counts_checked": True}
    assert record["pitts30k_test"]["protocol"] == protocol["pitts30k_test"]
    assert protocol["msls_val"]["threshold_m"] is None and "msls_val_pIdx.npy" in protocol["msls_val"]["positives"]
    # the wider radius is the one used
    wide = build_eval_set("pitts30k_test", {"pitts_root": root})
    usual = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]})
    assert sum(map(len, wide.ground_truth)) > sum(map(len, usual.ground_truth))


@pytest.mark.parametrize("threshold", [0.0, -25.0, float("nan")])
def test_posdistthr_that_is_not_a_positive_radius_is_an_error_naming_the_file(threshold, synthetic, tmp_path):
    root = pittsburgh_with(tmp_path / "pitts", synthetic, "pitts30k_test", posDistThr=np.array([[threshold]]))
    with pytest.raises(DataError, match=rf"{root}/datasets/pitts30k_test.mat gives posDistThr = {threshold:g}: "
                                        r"the positive radius must be a positive number of metres.*Restore"):
        build_eval_set("pitts30k_test", {"pitts_root": root})


def test_duplicate_database_or_query_paths_are_an_error(synthetic, tmp_path):
    mat = loadmat(str(synthetic["pitts"] / "datasets" / "pitts30k_test.mat"))["dbStruct"][0, 0]
    names = mat["dbImageFns"].copy()
    names[1, 0] = names[0, 0]
    root = pittsburgh_with(tmp_path / "pitts", synthetic, "pitts30k_test", dbImageFns=names)
    with pytest.raises(DataError, match=rf"{names[0, 0][0]} is listed 2 times in the database of .*pitts30k_test.mat"):
        build_eval_set("pitts30k_test", {"pitts_root": root})
    msls = tmp_path / "msls"
    shutil.copytree(synthetic["msls"], msls, symlinks=True)
    q_images = np.load(msls / "msls_val_qImages.npy")
    q_idx = np.load(msls / "msls_val_qIdx.npy")
    np.save(msls / "msls_val_qIdx.npy", np.concatenate([q_idx, q_idx[:1]]))
    p_idx = np.load(msls / "msls_val_pIdx.npy", allow_pickle=True)
    extended = np.empty(len(p_idx) + 1, dtype=object)
    for i, positives in enumerate([*p_idx, p_idx[0]]):  # one by one: equal lengths would broadcast
        extended[i] = positives
    np.save(msls / "msls_val_pIdx.npy", extended, allow_pickle=True)
    with pytest.raises(DataError, match=rf"{q_images[q_idx[0]]} is listed 2 times in the queries"):
        build_eval_set("msls_val", {"msls_root": msls})


def test_query_set_without_any_positive_is_an_error(synthetic, tmp_path):
    photo = next((synthetic["pitts"] / "000").glob("*.jpg"))
    for part, norths in (("database", (0, 10, 20)), ("queries", (5000, 6000))):
        folder = tmp_path / "far" / "images" / "test" / part
        folder.mkdir(parents=True)
        for i, north in enumerate(norths):
            shutil.copy(photo, folder / f"@500000@{4000000 + north}@17@T@@@{i}@@@@@@@@.jpg")
    with pytest.raises(DataError, match=r"far: none of the 2 queries has a positive in the file names under .*far "
                                        r"\(positives within 25 m\).*--data.pos_radius"):
        build_eval_set(f"folder:{tmp_path / 'far'}", {})


# ------------------------------------------------------------------------------ 10. nothing left by a failure
def test_cache_dir_that_cannot_be_written_evaluates_without_cache_with_a_note(gem_weights, synthetic, tmp_path,
                                                                             capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    record = run_eval(gem_weights, tmp_path / "eval", ["pitts30k_test"], synthetic, *GEM, "--cache_dir",
                      blocker / "descriptors")
    assert not record["benchmarks"]["pitts30k_test"]["descriptors_cached"]
    assert (newest(tmp_path / "eval") / "recalls.json").is_file()
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and f"descriptor cache {blocker / 'descriptors'} cannot be written" in notes[0]
    # a writable cache folder the check had to create is not left behind by it
    run_eval(gem_weights, tmp_path / "eval", ["pitts30k_test"], synthetic, *GEM, "--cache_dir", tmp_path / "new" / "c")
    assert len(list((tmp_path / "new" / "c").glob("*.npy"))) == 1


def _unreadable_set(synthetic, root: Path) -> Path:
    pitts = root / "pitts"
    pitts.mkdir(parents=True)
    shutil.copytree(synthetic["pitts"] / "000", pitts / "000")
    (pitts / "queries_real").symlink_to(synthetic["pitts"] / "queries_real")
    (pitts / "datasets").symlink_to(synthetic["pitts"] / "datasets")
    shutil.copy(synthetic["pitts"] / STANDIN_FILE, pitts)
    first = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]}).database_paths[0]
    (pitts / Path(first).relative_to(synthetic["pitts"])).write_bytes(b"not a jpeg")
    return pitts


FAILURES = {
    "missing checkpoint": lambda s, t, w, n: (t / "nowhere.ckpt", s["pitts"], FileNotFoundError),
    "unreadable image": lambda s, t, w, n: (w, _unreadable_set(s, t), DataError),
    "NaN weights": lambda s, t, w, n: (n, s["pitts"], CheckpointError),
}


@pytest.mark.parametrize("command", ["eval.py", "retrieve.py"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_failed_run_leaves_no_version_folder(command, failure, gem_weights, nan_weights, synthetic, tmp_path):
    checkpoint, pitts, error = FAILURES[failure](synthetic, tmp_path, gem_weights, nan_weights)
    out = tmp_path / "out"
    (out / "version_0").mkdir(parents=True)  # an earlier run's folder stays
    (out / "version_0" / "recalls.md").write_text("earlier")
    with pytest.raises(error):
        if command == "eval.py":
            eval_cli.main(["--checkpoint", str(checkpoint), "--benchmarks", "[pitts30k_test]", "--data.pitts_root",
                           str(pitts), "--out_dir", str(out), *GEM, *RUN])
        else:
            retrieve.main(["--checkpoint", str(checkpoint), "--database", str(pitts / "000"), "--queries",
                           str(pitts / "000"), "--out_dir", str(out), *GEM, *RUN])
    assert sorted(p.name for p in out.glob("version_*")) == ["version_0"]


# ------------------------------------------------------------------------------ 15. checkpoints carry preprocessing
def gem_run_args(synthetic, logs: Path, *extra) -> list[str]:
    """The tiny demo run with ResNet18 + GeM (any image size fits it)."""
    args = tiny_cli_args(synthetic, logs)
    i = args.index("--model.agg_config")
    args[i + 1] = "{}"
    return args + ["--model.agg_arch", "GeM", "--trainer.num_sanity_val_steps", "0",
                   "--data.val_sets", "[pitts30k_val]", *extra]


@pytest.fixture(scope="module")
def validated_at_48(synthetic, tmp_path_factory):
    """(last.ckpt, validation R@K) of a run trained at 32 x 32 and validated at 48 x 48."""
    logs = tmp_path_factory.mktemp("resized")
    cli = train_main(gem_run_args(synthetic, logs, "--data.eval_image_size", "[48, 48]"))
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("pitts30k_val/")}
    return Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt", metrics


def test_eval_without_config_evaluates_at_the_recorded_size_and_reproduces_validation(validated_at_48, synthetic,
                                                                                       tmp_path):
    ckpt, metrics = validated_at_48
    record = run_eval(ckpt, tmp_path, ["pitts30k_val"], synthetic)
    assert record["image_size"] == [48, 48]
    recall = record["benchmarks"]["pitts30k_val"]["recall"]
    assert {k: recall[str(k)] for k in (1, 5, 10)} == pytest.approx(
        {k: metrics[f"pitts30k_val/R{k}"] for k in (1, 5, 10)}, abs=1e-6)
    assert record["preprocessing"] == {"image_size": [48, 48], "mean": [0.485, 0.456, 0.406],
                                       "std": [0.229, 0.224, 0.225], "resize": "exact", "interpolation": "bilinear",
                                       "antialias": True}


def test_every_loader_reads_the_recorded_preprocessing(validated_at_48, synthetic, tmp_path, capsys):
    from models.export import main as export_main, read_preprocessing
    ckpt, _ = validated_at_48
    assert torch.load(ckpt, weights_only=True)["preprocessing"]["image_size"] == [48, 48]
    net = load_model(ckpt)
    assert (net.image_size, net.preprocessing.image_size) == ((32, 32), (48, 48))
    assert VPRModel.load_from_checkpoint(ckpt).net.preprocessing.image_size == (48, 48)
    from models.distillation import Teacher
    assert Teacher.from_checkpoint(ckpt).image_size == (48, 48)  # a distillation teacher is fed what it validated on
    export_main(["--checkpoint", str(ckpt), "--format", "torchscript", "--output", str(tmp_path / "m.pt")])
    assert read_preprocessing(tmp_path / "m.pt")["image_size"] == [48, 48]
    images = synthetic["pitts"] / "000"
    retrieve.main(["--checkpoint", str(ckpt), "--database", str(images), "--queries", str(images), "--out_dir",
                   str(tmp_path / "retrieve"), *RUN])
    keys = [json.loads(p.read_text())["key"] for p in (tmp_path / "retrieve" / "descriptors").glob("*.json")]
    assert [k["preprocessing"]["image_size"] for k in keys] == [[48, 48], [48, 48]]
    assert "note:" not in capsys.readouterr().err
    # the command line overrides the record, explicitly
    record = run_eval(ckpt, tmp_path / "eval", ["pitts30k_val"], synthetic, "--data.eval_image_size", "[32, 32]")
    assert record["image_size"] == [32, 32]
    assert "evaluated at 32 x 32 as asked, not at the 48 x 48 its preprocessing records" in capsys.readouterr().err


def test_checkpoint_without_the_record_falls_back_to_its_image_size_with_a_note(validated_at_48, synthetic,
                                                                                tmp_path, capsys):
    ckpt, _ = validated_at_48
    old = torch.load(ckpt, weights_only=True)
    del old["preprocessing"]
    torch.save(old, tmp_path / "old.ckpt")
    capsys.readouterr()
    assert run_eval(tmp_path / "old.ckpt", tmp_path, ["pitts30k_val"], synthetic)["image_size"] == [32, 32]
    (note,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert "old.ckpt records no evaluation preprocessing" in note and "32 x 32" in note


def test_releases_carry_their_published_test_preprocessing():
    from models.releases import RELEASES, release_network
    sizes = {"mixvpr_resnet50_4096": 320, "mixvpr_resnet50_512": 320, "mixvpr_resnet50_128": 320,
             "boq_dinov2_12288": 322, "boq_resnet50_16384": 384, "salad_dinov2_8448": 322,
             "lightweight_efficientnet_b0_128": 320, "lightweight_mobilenet_v2_1024": 320,
             "lightweight_resnet18_512": 320}
    # these families resize to a fixed size (the others: tests/test_families.py)
    assert {n: RELEASES[n].eval_preprocessing.fixed_size for n in sizes} == {n: (s, s) for n, s in sizes.items()}
    assert {(RELEASES[n].eval_preprocessing.mean, RELEASES[n].eval_preprocessing.std) for n in sizes} == {
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
    # the network of a release (hub, load_release) carries it; tests/test_hub.py checks each hub entry
    with torch.device("meta"):
        assert release_network("boq_resnet50_16384").preprocessing == RELEASES["boq_resnet50_16384"].eval_preprocessing


def test_eval_image_size_that_does_not_fit_the_model_is_refused_before_training(synthetic, tmp_path):
    # MixVPR is built for the training size's feature map: validating at 48 x 48 would fail after an epoch
    with pytest.raises(ConfigError, match=r"--data.eval_image_size \[48, 48\] does not fit the model built for "
                                          r"\[32, 32\].*MixVPR was built for a 2 x 2 feature map"):
        train_main(tiny_cli_args(synthetic, tmp_path) + ["--data.eval_image_size", "[48, 48]",
                                                         "--trainer.num_sanity_val_steps", "0"])
    assert not list((tmp_path / "synthetic_demo").glob("version_*"))


def test_validate_and_test_of_a_checkpoint_use_its_recorded_size_and_state_what_they_used(validated_at_48, synthetic,
                                                                                          tmp_path, capsys):
    ckpt, metrics = validated_at_48
    # no --data.eval_image_size: the size the checkpoint was validated at, as eval.py takes it
    validated = train_main(["validate", *gem_run_args(synthetic, tmp_path), "--ckpt_path", str(ckpt)])
    assert validated.datamodule.eval_image_size == (48, 48)
    recall = validated.model.eval_recalls["pitts30k_val"]
    assert {k: recall[k] for k in (1, 5, 10)} == pytest.approx({k: metrics[f"pitts30k_val/R{k}"] for k in (1, 5, 10)})
    assert "was validated at 48 x 48 (its preprocessing record)" in capsys.readouterr().err
    cli = train_main(["test", *gem_run_args(synthetic, tmp_path, "--data.test_sets", "[pitts30k_test, msls_val]"),
                      "--ckpt_path", str(ckpt)])
    notes = (Path(cli.trainer.log_dir) / "recalls.md").read_text()
    mat = synthetic["pitts"] / "datasets" / "pitts30k_test.mat"
    assert f"Pitts30k-test: positives are database images within 25 m (posDistThr of {mat}); 30 database " \
           f"images, 10 queries." in notes
    assert "Image size (H x W): 48x48." in notes and "MSLS-val: positives are" in notes
    # a checkpoint whose weights hold NaN: an error naming it, not 'unreadable images'
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"]["aggregator.p"].fill_(float("nan"))
    torch.save(state, tmp_path / "diverged.ckpt")
    with pytest.raises(CheckpointError, match=r"pitts30k_val: the checkpoint .*diverged.ckpt: non-finite .*weights "
                                              r"hold NaN or inf \(1 of"):
        train_main(["validate", *gem_run_args(synthetic, tmp_path), "--ckpt_path", str(tmp_path / "diverged.ckpt")])


# ------------------------------------------------------------------------------ a newline in a file name
def test_pictures_of_images_with_a_newline_in_their_name(gem_weights, synthetic, tmp_path):
    photos = sorted((synthetic["pitts"] / "000").glob("*.jpg"))
    for part, norths in (("database", (0, 100, 200, 300, 400)), ("queries", (2, 198))):
        folder = tmp_path / "odd" / "images" / "test" / part
        folder.mkdir(parents=True)
        for i, north in enumerate(norths):
            shutil.copy(photos[i], folder / f"@500000@{4000000 + north}@17@T@@@{i}@line\nbreak@@@@@@.jpg")
    run_eval(gem_weights, tmp_path / "eval", [f"folder:{tmp_path / 'odd'}"], synthetic, *GEM, "--visualize", "-1")
    folder = newest(tmp_path / "eval") / "retrievals" / "m" / "odd"
    rows = list(csv.DictReader((folder / "retrievals.csv").open(newline="")))
    assert len(rows) == 2 and all("\n" in r["query"] and Path(r["query"]).is_file() for r in rows)
    assert len(list(folder.glob("q*.jpg"))) == 2
    queries = tmp_path / "odd" / "images" / "test" / "queries"
    out = retrieve.main(["--checkpoint", str(gem_weights), "--database", str(tmp_path / "odd" / "images" / "test" /
                                                                              "database"),
                         "--queries", str(queries), "--out_dir", str(tmp_path / "retrieve"), "--visualize", "-1",
                         *GEM, *RUN])
    assert len(list(out.parent.glob("query*.jpg"))) == 2
    assert Image.open(next(out.parent.glob("query*.jpg"))).width > 0
