"""Inputs a user does not control: configs, images and downloaded weights are checked before they can cost
memory, time or trust. A config whose aliases expand to billions of values, a class_path naming any module,
a tiny PNG of 25000 x 25000 pixels, a tampered or truncated release file: each is one clear line, fast."""
import json
import shutil
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.inference import image_paths
from utils.errors import CheckpointError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def laughs(levels: int = 9) -> list[str]:
    """YAML entries a: [9 strings], b: [9 aliases of a], c: [9 of b] ...: 9 ** levels strings in a few lines."""
    names = "abcdefghijkl"[:levels]
    return ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:])]


def billion_laughs() -> str:
    """A recipe of a few hundred bytes whose model.agg_config stands for 9 ** 9 strings ("billion laughs")."""
    return "model:\n  agg_config:\n" + "".join(f"    {entry}\n" for entry in laughs())


# ----------------------------------------------------------------------------------------------- configs
# Run in a fresh interpreter: whether a module was imported is only meaningful there, and a regression
# (an alias bomb expanded) must end in a timeout, not in a test process using gigabytes.
CONFIG_PROBE = textwrap.dedent('''
    import contextlib, io, json, sys, time
    sys.path.insert(0, {repo!r})
    import eval as eval_cli
    import main
    from utils.cli import run_command

    def attempt(command, argv):
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_command(command, argv)
                code = 0
            except SystemExit as exit:
                code = exit.code
        return {{"seconds": time.perf_counter() - start, "code": code, "stdout": out.getvalue(),
                 "stderr": err.getvalue()}}

    bomb, class_path = sys.argv[1], sys.argv[2]
    results = {{
        "fit": attempt(main.main, ["fit", "--config", bomb]),
        "print_config": attempt(main.main, ["fit", "--config", bomb, "--print_config"]),
        "eval": attempt(eval_cli.main, ["--config", bomb, "--checkpoint", "missing.ckpt"]),
        "value_in_config": attempt(main.main, ["fit", "--config", sys.argv[3]]),
        "class_path": attempt(main.main, ["fit", "--config", class_path]),
        "class_path_flag": attempt(main.main, ["fit", "--trainer.callbacks", '[{{"class_path": "this.Foo"}}]']),
    }}
    results["this_imported"] = "this" in sys.modules
    print(json.dumps(results))
''')


@pytest.fixture(scope="module")
def config_attacks(tmp_path_factory) -> dict:
    """What fit, --print_config and eval.py do with an alias bomb, and fit with ``class_path: this.Foo``."""
    folder = tmp_path_factory.mktemp("configs")
    (folder / "bomb.yaml").write_text(billion_laughs())
    # the same bomb as a string value inside an innocent-looking recipe: jsonargparse loads it as YAML again
    (folder / "string_bomb.yaml").write_text(f"trainer:\n  max_epochs: {json.dumps('{' + ', '.join(laughs()) + '}')}\n")
    (folder / "class_path.yaml").write_text("trainer:\n  callbacks:\n  - class_path: this.Foo\n")
    script = folder / "probe.py"
    script.write_text(CONFIG_PROBE.format(repo=str(REPO)))
    done = subprocess.run([sys.executable, str(script), str(folder / "bomb.yaml"), str(folder / "class_path.yaml"),
                           str(folder / "string_bomb.yaml")],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["fit", "print_config", "eval"])
def test_alias_bomb_config_is_refused_in_one_line_before_anything_is_built(config_attacks, command):
    result = config_attacks[command]
    assert result["code"] == 2
    assert result["seconds"] < 2.0, result["seconds"]
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config bomb.yaml ")
    assert "10,000 values" in lines[0] and "aliases" in lines[0]
    assert "lol" not in result["stdout"] + result["stderr"]  # nothing printed as a config


def test_alias_bomb_in_a_string_value_is_not_expanded(config_attacks):
    result = config_attacks["value_in_config"]
    assert result["code"] == 2 and result["seconds"] < 2.0, result
    assert len(result["stderr"].strip().splitlines()) == 1 and "max_epochs" in result["stderr"]


def test_recipe_with_a_few_aliases_still_parses(tmp_path, capsys):
    import main

    recipe = tmp_path / "aliased.yaml"
    recipe.write_text("data:\n  image_size: &size [64, 64]\n  eval_image_size: *size\n")
    with pytest.raises(SystemExit) as done:
        main.main(["fit", "--config", str(recipe), "--print_config"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "eval_image_size:\n  - 64\n  - 64" in printed


@pytest.mark.parametrize("source", ["class_path", "class_path_flag"])
def test_class_path_of_a_module_not_allowed_is_refused_before_it_is_imported(config_attacks, source):
    result = config_attacks[source]
    assert result["code"] == 2
    assert result["stderr"].strip().splitlines() == [
        "error: class_path 'this.Foo' is refused: configs import classes only from the modules lightning, "
        "pytorch_lightning, torch, torchmetrics, models, dataloaders, utils, bench, tiny_cli. If you trust 'this', "
        "allow it with VPR_ALLOWED_MODULES=this"]
    assert "Zen of Python" not in result["stdout"]
    assert not config_attacks["this_imported"]


# ------------------------------------------------------------------------------------------------ images
def huge_png(path: Path, side: int = 25000) -> Path:
    """A black 1-bit PNG of side x side pixels: some 80 kB on disk, side ** 2 * 3 bytes once decoded to RGB.
    Written row by row (a valid PNG: signature, IHDR, one IDAT, IEND), never held whole in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, packer = bytes(1 + (side + 7) // 8), zlib.compressobj(9)  # filter byte 0, then the packed bits
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def photo(seed: int, size=(24, 32)) -> np.ndarray:
    """A small random RGB picture (H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_image_over_the_pixel_limit_is_refused_from_its_header_as_unreadable(tmp_path, monkeypatch):
    from dataloaders.image_io import decode_rgb, read_bytes

    path = huge_png(tmp_path / "huge.png")
    assert path.stat().st_size < 200_000
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"huge\.png: 625,000,000 pixels, over the limit of "
                                        r"89,478,485 decoded pixels \(VPR_MAX_IMAGE_PIXELS raises it\)\. Replace "
                                        r"the file, or set skip_unreadable"):
        decode_rgb(read_bytes(path), path)
    assert time.perf_counter() - start < 1.0
    # the limit is a setting: a 32 x 24 (width x height) picture is refused under 768 pixels and read at 768
    Image.fromarray(photo(0)).save(tmp_path / "small.png")
    monkeypatch.setenv("VPR_MAX_IMAGE_PIXELS", "767")
    with pytest.raises(DataError, match="32 x 24 = 768 pixels, over the limit of 767"):
        decode_rgb(read_bytes(tmp_path / "small.png"), "small.png")
    monkeypatch.setenv("VPR_MAX_IMAGE_PIXELS", "768")
    assert decode_rgb(read_bytes(tmp_path / "small.png"), "small.png").shape == (3, 24, 32)
    monkeypatch.setenv("VPR_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="VPR_MAX_IMAGE_PIXELS='lots'"):
        decode_rgb(read_bytes(tmp_path / "small.png"), "small.png")


# every reader of images meets the huge PNG, in a fresh process whose peak memory is measured: decoding it
# would take 1.9 GB (25000 x 25000 x 3 bytes)
HUGE_PROBE = textwrap.dedent('''
    import json, resource, sys, time
    sys.path.insert(0, {repo!r})
    import torch
    import eval as eval_cli
    import retrieve
    from dataloaders.eval import build_eval_set
    from dataloaders.gsv_cities import GSVCitiesDataset
    from dataloaders.synthetic import SYNTHETIC_CITIES
    from dataloaders.unreadable import find_unreadable
    from main import load_model
    from models.inference import embed
    from utils.errors import DataError

    case = json.loads(sys.argv[1])
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # MB
    flags = case["flags"]
    net = load_model(case["weights"], **case["arch"])
    results = {{}}

    def run(name, step):
        start = time.perf_counter()
        try:
            outcome = step()
        except DataError as err:
            outcome = "DataError: " + str(err)
        results[name] = {{"seconds": time.perf_counter() - start, "outcome": outcome}}

    def runs(tag):  # the same work on the clean copies first (their cost is the baseline), then with the huge file
        folder, gsv = case["folder_" + tag], case["gsv_" + tag]
        run("embed_" + tag, lambda: embed(net, folder + "/images/test/database", skip_unreadable=True,
                                          progress=False).tolist())
        run("retrieve_" + tag, lambda: sorted({{row.split(",")[2] for row in open(retrieve.main([
            "--checkpoint", case["weights"], "--database", folder + "/images/test/database", "--queries",
            folder + "/images/test/queries", "--out_dir", case["out"] + "/retrieve_" + tag,
            "--data.skip_unreadable", "true", "--cache", "false", *flags[:-2]])).read().splitlines()[1:]}}))
        run("eval_" + tag, lambda: eval_cli.main(["--checkpoint", case["weights"], "--benchmarks",
            "[folder:" + folder + "]", "--out_dir", case["out"] + "/eval_" + tag, "--data.skip_unreadable", "true",
            "--cache", "false", *flags])["gem"]["benchmarks"])
        dataset = GSVCitiesDataset(gsv, SYNTHETIC_CITIES[:2], skip_unreadable=True)
        run("train_item_" + tag, lambda: dataset[case["place"]][2].tolist())
        run("train_check_" + tag, lambda: find_unreadable(dataset.paths, progress=False).tolist())
        encoded = GSVCitiesDataset(gsv, SYNTHETIC_CITIES[:2], encoded=True)  # decode_on gpu: bytes for the device
        run("train_encoded_" + tag, lambda: len(encoded[case["place"]][0]))

    runs("clean")
    baseline = peak()
    runs("huge")
    results["growth_mb"] = peak() - baseline
    print(json.dumps(results))
''')


@pytest.fixture(scope="module")
def huge_image_runs(synthetic, tmp_path_factory) -> dict:
    """What embed, retrieve.py, eval.py and training's reader make of a 25000 x 25000 PNG among small images."""
    import torch

    from dataloaders.gsv_cities import GSVCitiesDataset
    from dataloaders.synthetic import SYNTHETIC_CITIES
    from models import VPRModel

    root = tmp_path_factory.mktemp("huge")
    huge = huge_png(root / "huge.png")
    for tag in ("clean", "huge"):
        for part, n in (("database", 6), ("queries", 2)):
            folder = root / f"folder_{tag}" / "images" / "test" / part
            folder.mkdir(parents=True)
            for i in range(n):
                east = 500_000 + 100 * i + (5 if part == "queries" else 0)
                Image.fromarray(photo(i)).save(folder / f"@{east}@4000000@.jpg")
        shutil.copytree(synthetic["gsv_cities"], root / f"gsv_{tag}")
    shutil.copy(huge, root / "folder_huge" / "images" / "test" / "database" / "@500900@4000000@.png")
    dataset = GSVCitiesDataset(root / "gsv_huge", SYNTHETIC_CITIES[:2])
    place = next(p for p in range(dataset.num_places) if dataset.offsets[p + 1] - dataset.offsets[p] == 4)
    victim = dataset.paths[dataset.offsets[place]]
    shutil.copy(huge, victim)  # a PNG under a .jpg name: the header says what it is
    torch.manual_seed(0)
    arch = {"backbone_arch": "resnet18", "layers_to_crop": [4], "agg_arch": "GeM", "agg_config": {},
            "image_size": [32, 32]}
    torch.save(VPRModel(**arch).state_dict(), root / "gem.pth")
    flags = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch", "GeM",
             "--model.agg_config", "{}", "--data.image_size", "[32, 32]", "--num_workers", "0", "--device", "cpu",
             "--progress", "false", "--names", "[gem]"]
    case = {"weights": str(root / "gem.pth"), "arch": arch, "out": str(root / "out"), "place": place,
            "flags": flags, **{f"{kind}_{tag}": str(root / f"{kind}_{tag}") for kind in ("folder", "gsv")
                               for tag in ("clean", "huge")}}
    script = root / "probe.py"
    script.write_text(HUGE_PROBE.format(repo=str(REPO)))
    done = subprocess.run([sys.executable, str(script), json.dumps(case)], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    results["victim"], results["stdout"] = str(victim), done.stdout
    return results


def test_huge_image_costs_no_memory_in_any_reader(huge_image_runs):
    assert huge_image_runs["growth_mb"] < 150, huge_image_runs["growth_mb"]
    for name, result in huge_image_runs.items():
        if name.endswith("_huge"):
            assert result["seconds"] < 10, (name, result["seconds"])


def test_huge_image_is_left_out_and_listed_like_an_unreadable_one(huge_image_runs):
    runs = huge_image_runs
    assert np.isnan(runs["embed_huge"]["outcome"][-1]).all() and np.isfinite(runs["embed_huge"]["outcome"][:-1]).all()
    assert "database: skipped 1 unreadable image(s), e.g. " in runs["stdout"]
    assert runs["retrieve_huge"]["outcome"] and all(m.endswith(".jpg") for m in runs["retrieve_huge"]["outcome"])
    benchmark = runs["eval_huge"]["outcome"]["folder_huge"]
    assert benchmark["skipped_database"] == 1 and benchmark["num_references"] == 6
    assert runs["train_item_huge"]["outcome"] and runs["train_item_clean"]["outcome"] == []
    assert runs["train_check_huge"]["outcome"] == runs["train_item_huge"]["outcome"]
    assert runs["train_encoded_huge"]["outcome"].startswith("DataError: cannot read image " + runs["victim"] + ": 625,000,000 pixels")


# ----------------------------------------------------------------------------------------- image formats
# extension -> Pillow format; lossless ones, so the pixels read must be the pixels written
FORMATS = {".webp": "WEBP", ".tif": "TIFF", ".TIFF": "TIFF", ".bmp": "BMP", ".png": "PNG"}


@pytest.fixture
def formats_set(tmp_path) -> tuple[Path, dict]:
    """A folder set whose database holds WebP, TIFF (.tif and .TIFF), BMP, PNG and an upper-case .JPG, beside
    a text file and a hidden file; {path: pixels written} of the lossless images."""
    database, queries = (tmp_path / "formats" / "images" / "test" / part for part in ("database", "queries"))
    database.mkdir(parents=True), queries.mkdir(parents=True)
    written = {}
    for i, (suffix, fmt) in enumerate(FORMATS.items()):
        path = database / f"@{500_000 + 100 * i}@4000000@{suffix}"
        Image.fromarray(photo(i)).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        written[str(path)] = photo(i)
    Image.fromarray(photo(9)).save(database / "@500900@4000000@.JPG", "JPEG")
    (database / "notes.txt").write_text("taken on a sunny day")
    (database / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    Image.fromarray(photo(0)).save(queries / "@500005@4000000@.jpg", "JPEG")
    return tmp_path / "formats", written


def test_folder_set_reads_every_image_format_and_lists_what_it_leaves_out(formats_set, capsys):
    from dataloaders.eval import build_eval_set

    root, written = formats_set
    dataset = build_eval_set(f"folder:{root}", {})
    assert sorted(Path(p).suffix for p in dataset.database_paths) == sorted([*FORMATS, ".JPG"])
    assert capsys.readouterr().err.count("note: ") == 1
    for i, path in enumerate(dataset.database_paths):
        image, index, readable = dataset[i]
        assert readable and index == i and image.shape == (3, 24, 32)
        if path in written:
            np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), written[path])
    image_paths(root / "images" / "test" / "database")
    note = capsys.readouterr().err
    assert "left out 2 file(s) that are not images this project reads (.txt 1, hidden files 1)" in note


def test_retrieve_and_embed_take_every_image_format(formats_set, tmp_path):
    import retrieve
    import torch

    from models import VPRModel
    from models.inference import embed

    root, _ = formats_set
    database = root / "images" / "test" / "database"
    torch.manual_seed(0)
    net = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="GeM", image_size=(32, 32))
    torch.save(net.state_dict(), tmp_path / "gem.pth")
    descriptors = embed(net.net, database, progress=False)
    assert descriptors.shape == (6, net.descriptor_dim) and np.isfinite(descriptors).all()
    matches = retrieve.main(["--checkpoint", str(tmp_path / "gem.pth"), "--database", str(database), "--queries",
                             str(root / "images" / "test" / "queries"), "--top_k", "6", "--out_dir", str(tmp_path),
                             "--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch",
                             "GeM", "--model.agg_config", "{}", "--data.image_size", "[32, 32]", "--device", "cpu",
                             "--progress", "false"]).read_text().splitlines()[1:]
    assert sorted(Path(row.split(",")[2]).suffix for row in matches) == sorted([*FORMATS, ".JPG"])


def test_animated_gif_reads_as_its_first_frame(tmp_path):
    from dataloaders.image_io import decode_rgb, read_bytes

    frames = [Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    image = decode_rgb(read_bytes(tmp_path / "moving.gif"), "moving.gif")
    assert image.shape == (3, 24, 32) and int(image.max()) == 0  # the first frame, not a stack of three


# ------------------------------------------------------------------------- messages and ignored settings
def test_dinov2_weights_are_not_taken_for_a_lightweight_mixvpr_release(tmp_path):
    import torch

    from models import load_weights
    from models.layouts import lightweight
    from release_layouts import dinov2_layout, prefixed, release, salad_layout
    from utils.errors import CheckpointError

    salad = release(prefixed("backbone.model.", dinov2_layout(32, 2)), salad_layout(32, 4, 4, 4))
    assert not lightweight.is_layout(salad) and lightweight.to_ours(salad) == salad
    torch.save({k: torch.zeros(s) for k, s in salad.items()}, tmp_path / "salad.ckpt")
    from models import build_network
    with pytest.raises(CheckpointError) as err:
        load_weights(build_network("resnet18", agg_arch="GeM", image_size=(32, 32)), tmp_path / "salad.ckpt")
    assert "layout" not in str(err.value).splitlines()[0]  # no project's layout claimed for it


def test_architecture_hint_names_the_image_size_flag_every_command_takes(tmp_path):
    import torch

    from models import VPRModel, load_model
    from utils.errors import CheckpointError

    torch.save(VPRModel(backbone_arch="resnet18", agg_arch="MixVPR", image_size=(32, 32),
                        agg_config={"out_channels": 8, "mix_depth": 1, "out_rows": 2}).state_dict(), tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "m.pth")
    assert "--data.image_size '[32, 32]'" in str(err.value) and "--model.image_size" not in str(err.value)


@pytest.mark.parametrize("setting", [{"pretrained": True}, {"layers_to_freeze": 3}])
def test_load_model_refuses_settings_that_do_not_apply_to_loading(tmp_path, setting):
    import torch

    from models import VPRModel, load_model

    arch = {"backbone_arch": "resnet18", "layers_to_crop": [4], "agg_arch": "GeM", "image_size": [32, 32]}
    torch.save(VPRModel(**arch).state_dict(), tmp_path / "gem.pth")
    name = next(iter(setting))
    with pytest.raises(ConfigError, match=rf"load_model\(\.\.\., {name}=.*\) does not apply to loading"):
        load_model(tmp_path / "gem.pth", **arch, **setting)


# ------------------------------------------------------------------------------------- released weights
TINY_ARCH = {"backbone_arch": "resnet18", "layers_to_crop": [4], "agg_arch": "GeM", "agg_config": {},
             "image_size": [32, 32]}


@pytest.fixture
def tiny_release(tmp_path, monkeypatch):
    """A release served from a local file (file:// URL: downloads are real, the network is not needed) with an
    empty torch.hub cache. Returns (register(sha256) -> name, the served file, its weights, the cache folder)."""
    import torch

    from models import build_network
    from models.releases import RELEASES, Release

    torch.manual_seed(0)
    weights = build_network(**TINY_ARCH).state_dict()
    served = tmp_path / "published" / "tiny_gem.pth"
    served.parent.mkdir()
    torch.save(weights, served)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def register(sha256):
        monkeypatch.setitem(RELEASES, "tiny_gem_256", Release(TINY_ARCH, "tiny_gem.pth", served.as_uri(),
                                                              "https://example.org/tiny/releases", sha256=sha256))
        return "tiny_gem_256"

    return register, served, weights, tmp_path / "torch" / "hub" / "checkpoints"


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def loads_the_weights(name: str, weights: dict) -> bool:
    import torch

    from models import load_release

    state = load_release(name).state_dict()
    return set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)


def test_release_with_a_published_digest_is_checked_on_download_and_before_every_use(tiny_release):
    register, served, weights, cache = tiny_release
    name = register(sha256_of(served))
    assert loads_the_weights(name, weights)
    assert sorted(p.name for p in cache.iterdir()) == ["tiny_gem.pth"]  # no record needed, no partial file left
    cached = cache / "tiny_gem.pth"
    cached.write_bytes(cached.read_bytes()[:-1000])  # a copy cut short
    from models import load_release
    with pytest.raises(CheckpointError) as err:
        load_release(name)
    assert str(err.value) == (
        f"{cached} is not the published {name} weights: its SHA-256 is {sha256_of(cached)}, the published one is "
        f"{sha256_of(served)} (truncated, corrupt or another file). Delete it and run again to download it anew "
        f"(from {served.as_uri()}, published at https://example.org/tiny/releases).")
    cached.unlink()
    assert loads_the_weights(name, weights)


def test_download_that_does_not_match_the_published_digest_is_not_kept(tiny_release):
    register, served, weights, cache = tiny_release
    name = register("0" * 64)  # the source now serves another file than the one published
    from models import load_release
    with pytest.raises(CheckpointError, match=rf"has SHA-256 {sha256_of(served)}, not the published 0{{64}}: cut "
                                              r"short or changed at the source; nothing was kept"):
        load_release(name)
    assert list(cache.iterdir()) == []


def test_release_without_a_published_digest_is_checked_against_the_hash_recorded_at_download(tiny_release):
    register, served, weights, cache = tiny_release
    name = register(None)
    assert loads_the_weights(name, weights)
    record = json.loads((cache / "tiny_gem.pth.sha256.json").read_text())
    assert record["sha256"] == sha256_of(served) and record["source"] == served.as_uri()
    assert record["size"] == served.stat().st_size and record["release"] == name
    assert loads_the_weights(name, weights)  # the second use checks the file against the record
    cached = cache / "tiny_gem.pth"
    cached.write_bytes(cached.read_bytes().replace(b"PK", b"PQ", 1))
    from models import load_release
    with pytest.raises(CheckpointError, match=rf"tiny_gem.pth changed since it was recorded: its SHA-256 is "
                                              rf"{sha256_of(cached)}, the recorded one {sha256_of(served)} "
                                              r"\(tiny_gem.pth.sha256.json\)\. Delete it and run again"):
        load_release(name)


def test_file_put_in_the_cache_by_hand_is_refused_until_accepted_with_its_hash(tiny_release, capsys):
    from models import load_release
    from models.releases import main as releases_main

    register, served, weights, cache = tiny_release
    name = register(None)
    cache.mkdir(parents=True)
    shutil.copy(served, cache / "tiny_gem.pth")  # as the offline message says to
    digest = sha256_of(served)
    with pytest.raises(CheckpointError) as err:
        load_release(name)
    assert str(err.value).endswith(
        f"its SHA-256 is {digest}. If it is the file from https://example.org/tiny/releases, accept it with: "
        f"python -m models.releases trust {name} {digest} (or delete it to download it anew)")
    with pytest.raises(CheckpointError, match=f"has SHA-256 {digest}, not the {'1' * 64} given"):
        releases_main(["trust", name, "1" * 64])
    releases_main(["trust", name, digest])
    assert "accepted as tiny_gem_256" in capsys.readouterr().out
    assert loads_the_weights(name, weights)


def test_cached_backbone_weights_are_checked_against_the_digest_in_their_name(tmp_path, monkeypatch):
    import torch
    import torchvision

    from models.backbones import build_backbone
    from models.backbones.imagenet_weights import load_pretrained_weights
    from reference_weights import cache_as_published

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    reference = torchvision.models.resnet18(weights=None)
    cache_as_published(reference.state_dict(), weights, tmp_path, monkeypatch)
    backbone = build_backbone("resnet18", pretrained=True, layers_to_crop=[4])
    torch.testing.assert_close(backbone.model.conv1.weight, reference.conv1.weight)
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight changed: the file still loads, silently other weights
    cached.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{cached.name} is not the published ImageNet weights: its SHA-256 is "
                                              rf"{sha256_of(cached)}, the published one starts {cached.stem[-8:]}"):
        build_backbone("resnet18", pretrained=True, layers_to_crop=[4])
    # a name without a digest (DINOv2's): a truncated cached file is named as the problem, not the network
    truncated = cached.with_name("dinov2_vits14_pretrain.pth")
    truncated.write_bytes(cached.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"dinov2_vits14_pretrain.pth cannot be read as the DINOv2 weights of "
                                              r"dinov2_vits14 .*truncated or another file; delete it"):
        load_pretrained_weights(reference, "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
                                "dinov2_vits14", "DINOv2 weights")
