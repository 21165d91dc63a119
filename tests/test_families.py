"""The field's released models, built here exactly: CosPlace, EigenPlaces, NetVLAD, MegaLoc, CliqueMining.

Each family's released key layout is written down independently of our model code (tests/release_layouts.py,
from the authors' published structure) and must map onto our network strictly; our forward pass on seeded
weights in that layout must give the descriptors the authors' own code gives (tests/data/families_reference.npz,
<= 1e-5), and so must our evaluation pipeline (image file -> descriptor) against theirs.

The reference outputs were computed by a script outside this repository that ran the authors' code at these
commits, loaded with ``seeded_state_dict`` of each model's own state_dict (GeM's p set to 2.7), in eval mode,
on ``seeded_image`` inputs:

- ``cosplace_*``, ``eigenplaces_*``: gmberton/CosPlace 33ce8d0 ``cosplace_model.cosplace_network.GeoLocalizationNet``
  (ResNet18 32-d, VGG16 64-d) and gmberton/EigenPlaces a2969f7 ``eigenplaces_network.GeoLocalizationNet_``
  (ResNet50 128-d), the torchvision trunks built without their ImageNet/CosPlace weights (the seeded weights
  replace them). ``*_64x96`` batch 2, ``*_80x64`` batch 1 (seed 1). ``cosplace_resnet18_32_pipeline``: their
  test_dataset.py transform (ToTensor, ImageNet Normalize, no resize) on the PIL images of ``seeded_uint8``
  arrays 60 x 90 (seeds 0, 1) and 70 x 50 (seed 2), one image per forward pass.
- ``netvlad_*``: gmberton/VPR-methods-evaluation adbb6e2 ``vpr_models/netvlad.py`` (hloc's port of the MATLAB
  release) with 4 clusters (its NetVLADLayer default patched from 64; whitening to its 4096), reading a
  MatConvNet file written by ``release_layouts.write_netvlad_mat`` from ``seeded_matconvnet`` where it looks for
  VGG16-NetVLAD-Pitts30K.mat; ``netvlad_whitened_pipeline`` with ``descriptors_dimension=4096``,
  ``netvlad_pipeline`` with 32768 (the same file, no whitening), both through its test_dataset.py transform
  (ToTensor, ImageNet Normalize, no resize: its forward denormalises to 0..255) on ``seeded_uint8`` 64 x 96
  (seed 0), 80 x 64 (1), 64 x 96 (2), one image per forward pass.
- ``megaloc_safetensors_*``: gmberton/MegaLoc 1af071c ``megaloc_model.MegaLoc`` (its own ViT, the layout of the
  Hugging Face file) with its backbone and aggregator rebuilt at width 32, depth 2, 2 heads, 8 clusters of 4,
  a 6-d token, 24-d output (hidden 512, as theirs); ``megaloc_github_*``: its first release's model
  (0a6789f, ``MegaLocModel``: the official DINOv2 hub model, facebookresearch/dinov2 b8931f7 at that size, as
  ``backbone.model``). ``SALAD_GAIN`` x30 on the score layer. ``*_70x98`` batch 2, ``*_60x90`` batch 1 (seed 1:
  resized to 56 x 84 in their forward), ``*_pipeline``: VPR-methods-evaluation's transform (no resize) on
  ``seeded_uint8`` 60 x 90 (seed 0) and 75 x 50 (seed 1), the model as their hub returns it.
- ``cliquemining_*``: serizba/cliquemining f7c4e8f, its VPRModel's modules (``models.helper.get_backbone``
  DINOv2 with the official DINOv2 at width 32, depth 2, 2 heads; ``get_aggregator('SALAD')`` 8 clusters of 4,
  6-d token) and forward, the score layer's weights x30. ``cliquemining_70x98`` batch 2; ``cliquemining_pipeline``:
  its eval.py ``input_transform((70, 98))`` (PIL bilinear resize, ToTensor, Normalize) on ``seeded_uint8``
  60 x 90 (seed 0) and 100 x 120 (seed 1), one batch.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from main import load_weights
from models.layouts import cosplace as cosplace_layout
from reference_weights import seeded_image, seeded_state_dict, shapes_of
from release_layouts import geolocalization_layout

REFERENCE = np.load(Path(__file__).parent / "data" / "families_reference.npz")
TOLERANCE = 1e-5


def seeded_uint8(height: int, width: int, seed: int) -> np.ndarray:
    """(height, width, 3) uint8 pixels, as the reference script drew them."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def image_files(folder: Path, shapes) -> list[Path]:
    """PNG files (lossless: the pixels both pipelines read are the same) of ``seeded_uint8`` arrays."""
    paths = []
    for i, (h, w, seed) in enumerate(shapes):
        paths.append(folder / f"{i}.png")
        Image.fromarray(seeded_uint8(h, w, seed)).save(paths[-1])
    return paths


def assert_matches(ours: torch.Tensor | np.ndarray, entry: str) -> None:
    expected = REFERENCE[entry]
    ours = np.asarray(ours)
    assert ours.shape == expected.shape, entry
    assert np.abs(ours - expected).max() <= TOLERANCE, (entry, np.abs(ours - expected).max())


# ------------------------------------------------------------------ CosPlace, EigenPlaces
def geolocalization_weights(backbone: str, dim: int) -> dict:
    weights = seeded_state_dict(geolocalization_layout(backbone, dim))
    weights["aggregation.1.p"] = torch.tensor([2.7])
    return weights


def test_every_cosplace_and_eigenplaces_release_maps_its_layout_onto_ours():
    from models.releases import COSPLACE_DIMS, EIGENPLACES_DIMS, RELEASES, release_network

    for family, dims in (("cosplace", COSPLACE_DIMS), ("eigenplaces", EIGENPLACES_DIMS)):
        for backbone, sizes in dims.items():
            # the network of each backbone built once; its other sizes differ in the linear layer only
            layout = cosplace_layout.to_ours(geolocalization_layout(backbone, sizes[0]))
            with torch.device("meta"):
                net = release_network(f"{family}_{backbone.lower()}_{sizes[0]}")
            assert shapes_of(net.state_dict()) == layout, (family, backbone)
            first = RELEASES[f"{family}_{backbone.lower()}_{sizes[0]}"].architecture
            for dim in sizes:
                release = RELEASES[f"{family}_{backbone.lower()}_{dim}"]
                theirs = geolocalization_layout(backbone, dim)
                assert cosplace_layout.is_layout(theirs)
                assert release.architecture == {**first, "agg_config": {**first["agg_config"], "out_dim": dim}}
                channels = first["agg_config"]["in_channels"]
                assert cosplace_layout.to_ours(theirs)["aggregator.fc.weight"] == (dim, channels)


@pytest.mark.parametrize("release,backbone,dim", [
    ("cosplace_resnet18_32", "ResNet18", 32), ("cosplace_vgg16_64", "VGG16", 64),
    ("eigenplaces_resnet50_128", "ResNet50", 128)])
def test_cosplace_family_release_loads_strictly_and_matches_the_authors(tmp_path, release, backbone, dim):
    from models.releases import release_network

    path = tmp_path / f"{backbone}_{dim}.pth"
    torch.save(geolocalization_weights(backbone, dim), path)
    net = load_weights(release_network(release), path).eval()
    with torch.no_grad():
        assert_matches(net(seeded_image(64, 96, batch=2)), f"{release}_64x96")
        assert_matches(net(seeded_image(80, 64, batch=1, seed=1)), f"{release}_80x64")


def test_cosplace_is_evaluated_at_each_images_own_resolution_as_its_test_dataset(tmp_path):
    from models.inference import embed
    from models.releases import release_network

    torch.save(geolocalization_weights("ResNet18", 32), tmp_path / "w.pth")
    net = load_weights(release_network("cosplace_resnet18_32"), tmp_path / "w.pth").eval()
    assert (net.preprocessing.resize, net.preprocessing.fixed_size) == ("none", None)
    # three files of two sizes in one batch: each image at its own size, in its input order
    paths = image_files(tmp_path, [(60, 90, 0), (60, 90, 1), (70, 50, 2)])
    assert_matches(embed(net, paths, batch_size=3, progress=False), "cosplace_resnet18_32_pipeline")


# ------------------------------------------------------------------ NetVLAD
@pytest.fixture(scope="module")
def netvlad_mat(tmp_path_factory) -> Path:
    """A seeded MATLAB release with 4 clusters and the 4096-d whitening, written as MatConvNet does."""
    from release_layouts import netvlad_matconvnet_layout, write_netvlad_mat
    from reference_weights import seeded_matconvnet

    path = tmp_path_factory.mktemp("netvlad") / "Pitts30K_struct.mat"
    write_netvlad_mat(path, seeded_matconvnet(netvlad_matconvnet_layout(4, 4096)))
    return path


def small_netvlad(whitening_dim):
    """The release's network with 4 clusters instead of 64 (the reference's)."""
    from models.network import build_network
    from models.releases import RELEASES

    arch = RELEASES["netvlad_vgg16_4096"].architecture
    net = build_network(**{**arch, "agg_config": {**arch["agg_config"], "num_clusters": 4,
                                                 "whitening_dim": whitening_dim}})
    net.preprocessing = RELEASES["netvlad_vgg16_4096"].eval_preprocessing
    return net


def test_netvlad_release_layout_maps_onto_ours_for_both_sizes():
    from models.layouts import netvlad as netvlad_layout
    from release_layouts import netvlad_matconvnet_layout

    for name, whitening in (("netvlad_vgg16_4096", 4096), ("netvlad_vgg16_32768", None)):
        theirs = netvlad_matconvnet_layout(64, whitening)
        assert netvlad_layout.is_layout(theirs)
        net = release_network_meta(name)
        assert shapes_of(net.state_dict()) == netvlad_layout.to_ours(theirs)
        assert net.descriptor_dim == (whitening or 32768)


@pytest.mark.parametrize("whitening_dim,entry", [(4096, "netvlad_whitened_pipeline"), (None, "netvlad_pipeline")])
def test_netvlad_matlab_release_loads_strictly_and_matches_the_port_the_field_evaluates_with(
        tmp_path, netvlad_mat, whitening_dim, entry):
    from models.inference import embed

    # one file for both: the 32768-d network leaves its whitening out
    net = load_weights(small_netvlad(whitening_dim), netvlad_mat).eval()
    # ImageNet-normalised input, no resize; the trunk takes pixels less the release's average colour (its first pixel)
    assert (net.preprocessing.mean, net.preprocessing.fixed_size) == ((0.485, 0.456, 0.406), None)
    assert net.backbone.average_rgb.tolist() == pytest.approx([90, 90 + 40 / 11, 90 + 80 / 11])
    paths = image_files(tmp_path, [(64, 96, 0), (80, 64, 1), (64, 96, 2)])
    assert_matches(embed(net, paths, batch_size=3, progress=False), entry)


def test_netvlad_file_that_is_not_a_matconvnet_network_is_named(tmp_path):
    from utils.errors import CheckpointError

    bad = tmp_path / "Pitts30K_struct.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(CheckpointError, match=r"Pitts30K_struct.mat \(30 bytes\) is not a readable MatConvNet network"):
        load_weights(torch.nn.Linear(1, 1), bad)  # refused when read, before any network is involved


# ------------------------------------------------------------------ MegaLoc
MEGALOC_GAIN = {"aggregator.agg.score.3.weight": 30.0}


def tiny_megaloc():
    """MegaLoc's release network at the reference's widths (tests/conftest.py tiny_dinov2: width 32, depth 2)."""
    from models.network import build_network
    from models.releases import RELEASES

    release = RELEASES["megaloc_dinov2_8448"]
    arch = release.architecture
    net = build_network(**{**arch, "backbone_arch": "dinov2_vitt14", "image_size": (70, 98),
                           "backbone_config": {**arch["backbone_config"], "num_trainable_blocks": 1},
                           "agg_config": {"num_channels": 32, "num_clusters": 8, "cluster_dim": 4, "token_dim": 6,
                                          "out_dim": 24}})
    net.preprocessing = release.eval_preprocessing.with_size(None)
    return net


def test_megaloc_both_release_layouts_map_onto_ours():
    from models.layouts import megaloc as megaloc_layout
    from release_layouts import megaloc_layout as published

    ours = shapes_of(release_network_meta("megaloc_dinov2_8448").state_dict())
    hugging_face, github = published(768, 12, 64, 256, 256, 8448), published(768, 12, 64, 256, 256, 8448, True)
    assert megaloc_layout.is_layout(hugging_face) and not megaloc_layout.is_layout(github)
    assert megaloc_layout.to_ours(hugging_face) == ours
    assert github == ours  # the first release is in our keys
    assert release_network_meta("megaloc_dinov2_8448").descriptor_dim == 8448


@pytest.mark.parametrize("file_name,first_release,entry", [
    ("megaloc.safetensors", False, "megaloc_safetensors"), ("megaloc.torch", True, "megaloc_github")])
def test_megaloc_release_loads_strictly_and_matches_the_authors(tiny_dinov2, tmp_path, file_name, first_release, entry):
    from safetensors.torch import save_file

    from models.inference import embed
    from release_layouts import megaloc_layout as published

    weights = seeded_state_dict(published(32, 2, 8, 4, 6, 24, first_release), gain=MEGALOC_GAIN)
    path = tmp_path / file_name
    (torch.save if first_release else save_file)(weights, path)
    net = load_weights(tiny_megaloc(), path).eval()
    with torch.no_grad():
        assert_matches(net(seeded_image(70, 98, batch=2)), f"{entry}_70x98")
        # not multiples of 14: resized inside the forward pass, after the normalisation, as theirs
        assert_matches(net(seeded_image(60, 90, batch=1, seed=1)), f"{entry}_60x90")
    paths = image_files(tmp_path, [(60, 90, 0), (75, 50, 1)])
    assert_matches(embed(net, paths, batch_size=2, progress=False), f"{entry}_pipeline")


def test_megaloc_without_patch_resizing_names_the_sizes_that_fit(tiny_dinov2):
    from models.backbones import build_backbone
    from utils.errors import ConfigError

    rounding = build_backbone("dinov2_vitt14", pretrained=False, resize_to_patches=True)
    assert rounding.feature_map_shape((60, 91)) == (32, 4, 6) and rounding.feature_map_shape((63, 77)) == (32, 4, 6)
    with pytest.raises(ConfigError, match="needs image sizes divisible by its patch size 14; got 60 x 91"):
        build_backbone("dinov2_vitt14", pretrained=False).feature_map_shape((60, 91))


# ------------------------------------------------------------------ CliqueMining
def tiny_salad_layout() -> dict:
    from release_layouts import dinov2_layout, prefixed, release, salad_layout

    return release(prefixed("backbone.model.", dinov2_layout(32, 2)), salad_layout(32, 8, 4, 6))


def test_clique_mining_release_is_salads_layout():
    from release_layouts import dinov2_layout, prefixed, release, salad_layout

    published = release(prefixed("backbone.model.", dinov2_layout(768, 12)), salad_layout(768, 64, 128, 256))
    assert shapes_of(release_network_meta("clique_mining_dinov2_8448").state_dict()) == published
    assert release_network_meta("clique_mining_dinov2_8448").preprocessing.fixed_size == (322, 322)


def test_clique_mining_checkpoint_loads_by_its_name_and_matches_the_authors(tiny_dinov2, tmp_path):
    from main import load_model
    from models.inference import embed

    # a Lightning checkpoint as their main.py saves it: the VPRModel's state_dict and hyper-parameters
    hyper_parameters = {"backbone_arch": "dinov2_vitt14",
                        "backbone_config": {"num_trainable_blocks": 1, "return_token": True, "norm_layer": True},
                        "agg_arch": "SALAD",
                        "agg_config": {"num_channels": 32, "num_clusters": 8, "cluster_dim": 4, "token_dim": 6},
                        "lr": 6e-5, "optimizer": "adamw", "lr_sched": "linear", "miner_margin": 0.1}
    path = tmp_path / "cliquemining.ckpt"
    torch.save({"epoch": 3, "global_step": 16000, "hyper_parameters": hyper_parameters,
                "state_dict": seeded_state_dict(tiny_salad_layout(), gain={"aggregator.score.3.weight": 30.0})}, path)
    net = load_model(path, image_size=(70, 98))
    with torch.no_grad():
        assert_matches(net(seeded_image(70, 98, batch=2)), "cliquemining_70x98")
    # resized before the normalisation, as its eval.py resizes the PIL image. Our resize is PIL's filter but rounds
    # some pixels one grey level apart (tests/test_transforms.py): here the files hold PIL's resized pixels
    assert net.preprocessing.fixed_size == (70, 98)
    paths = []
    for i, (h, w, seed) in enumerate([(60, 90, 0), (100, 120, 1)]):
        paths.append(tmp_path / f"resized{i}.png")
        Image.fromarray(seeded_uint8(h, w, seed)).resize((98, 70), Image.BILINEAR).save(paths[-1])
    assert_matches(embed(net, paths, batch_size=2, progress=False), "cliquemining_pipeline")
    # the release's own evaluation size when none is asked for
    assert load_model(path).preprocessing.fixed_size == (322, 322)


# ------------------------------------------------------------------ entry points, shared by every family
REPO = Path(__file__).resolve().parents[1]


def hub_load(entry: str, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO), entry, source="local", **kwargs)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache under tmp_path; downloads fail as offline."""
    import urllib.error

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def cache_release(name: str, obj, torch_home: Path, save=torch.save) -> Path:
    """Put ``obj`` in torch.hub's cache as release ``name``'s file, accepted by its hash as a user would."""
    from models.releases import RELEASES, file_sha256, trust

    path = torch_home / "hub" / "checkpoints" / RELEASES[name].file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    save(obj, path)
    trust(name, file_sha256(path))
    return path


HUB = [  # entry, the authors' keywords, release
    ("cosplace", {"backbone": "ResNet50", "fc_output_dim": 2048}, "cosplace_resnet50_2048"),
    ("cosplace", {"backbone": "VGG16", "fc_output_dim": 64}, "cosplace_vgg16_64"),
    ("eigenplaces", {"backbone": "ResNet101", "fc_output_dim": 128}, "eigenplaces_resnet101_128"),
    ("netvlad", {"descriptors_dimension": 4096}, "netvlad_vgg16_4096"),
    ("netvlad", {"backbone": "VGG16", "descriptors_dimension": 32768}, "netvlad_vgg16_32768"),
    ("megaloc", {}, "megaloc_dinov2_8448"),
    ("clique_mining", {}, "clique_mining_dinov2_8448"),
]


@pytest.mark.parametrize("entry,kwargs,release", HUB, ids=[r for _, _, r in HUB])
def test_hub_entry_takes_the_authors_keywords_and_builds_the_release(entry, kwargs, release):
    from models.releases import RELEASES

    with torch.device("meta"):
        net = hub_load(entry, pretrained=False, **kwargs)
    assert shapes_of(net.state_dict()) == shapes_of(release_network_meta(release).state_dict())
    assert net.preprocessing == RELEASES[release].eval_preprocessing and not net.training


def release_network_meta(name: str):
    from models.releases import release_network

    with torch.device("meta"):
        return release_network(name)


@pytest.mark.parametrize("entry,kwargs,release", HUB[:1], ids=[r for _, _, r in HUB[:1]])
def test_hub_entry_offline_names_the_release_file_and_the_folder(torch_home, entry, kwargs, release):
    from utils.errors import NotFoundError
    from models.releases import RELEASES

    with torch.device("meta"), pytest.raises(NotFoundError) as error:
        hub_load(entry, pretrained=True, **kwargs)
    message = str(error.value)
    assert str(torch_home / "hub" / "checkpoints" / RELEASES[release].file_name) in message
    assert RELEASES[release].url in message and "pretrained=False" in message


def test_hub_entry_names_the_published_sizes_of_a_backbone():
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"no eigenplaces release for backbone='ResNet18', descriptors_dimension=2048"
                                          r".*'eigenplaces_resnet18_256', 'eigenplaces_resnet18_512'"):
        hub_load("eigenplaces", backbone="ResNet18", fc_output_dim=2048, pretrained=False)


def test_release_file_names_are_unique_so_a_file_names_its_release():
    from models.releases import RELEASES, release_of_file

    by_file = {}
    for name, release in RELEASES.items():
        by_file.setdefault(release.file_name, []).append(name)
    # one file is several releases only where one file holds several networks (NetVLAD with and without WPCA)
    assert {f: n for f, n in by_file.items() if len(n) > 1} == {
        "Pitts30K_struct.mat": ["netvlad_vgg16_4096", "netvlad_vgg16_32768"]}
    assert release_of_file("/any/where/ResNet50_2048_cosplace.pth") == "cosplace_resnet50_2048"
    assert release_of_file("Pitts30K_struct.mat") is None and release_of_file("mine.ckpt") is None


RELEASE_CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml")
                         if p.stem in __import__("models.releases", fromlist=["RELEASES"]).RELEASES)


@pytest.mark.parametrize("stem", RELEASE_CONFIGS)
def test_release_recipe_builds_the_released_network(stem):
    from main import VPRModel
    from utils.recipes import read_recipe

    recipe = read_recipe(REPO / "configs" / f"{stem}.yaml")
    with torch.device("meta"):
        model = VPRModel(**{**recipe["model"], "pretrained": False, "image_size": recipe["data"]["image_size"]})
    assert shapes_of(model.net.state_dict()) == shapes_of(release_network_meta(stem).state_dict())


def test_load_model_knows_a_release_file_by_its_published_name_and_takes_a_recipe(tmp_path):
    from main import load_model
    from models.releases import RELEASES

    path = tmp_path / RELEASES["cosplace_resnet18_32"].file_name     # ResNet18_32_cosplace.pth
    torch.save(geolocalization_weights("ResNet18", 32), path)
    bare = tmp_path / "renamed.pth"
    bare.write_bytes(path.read_bytes())
    by_name = load_model(path)
    by_recipe = load_model(bare, config=REPO / "configs" / "cosplace_resnet50_2048.yaml",
                           agg_config={"in_channels": 512, "out_dim": 32}, backbone_arch="resnet18")
    images = seeded_image(64, 96, batch=2)
    with torch.no_grad():
        assert_matches(by_name(images), "cosplace_resnet18_32_64x96")
        assert_matches(by_recipe(images), "cosplace_resnet18_32_64x96")
    # the published name also says how its authors evaluate it; a renamed file takes the recipe's size
    assert by_name.preprocessing == RELEASES["cosplace_resnet18_32"].eval_preprocessing
    assert by_recipe.preprocessing.fixed_size == (512, 512)


@pytest.mark.parametrize("arch,crop", [("resnet18", [4]), ("resnet50", []), ("vgg16", [])])
def test_cnn_backbones_know_their_map_size_without_running(arch, crop):
    # built at 480 x 640 (NetVLAD) or 512 x 512 (CosPlace), a trial forward pass took seconds
    from models.backbones import build_backbone

    backbone = build_backbone(arch, pretrained=False, layers_to_crop=crop).eval()
    for size in ((33, 47), (64, 96), (35, 63)):
        with torch.no_grad():
            assert backbone.feature_map_shape(size) == tuple(backbone(torch.zeros(1, 3, *size)).shape[1:])


# ------------------------------------------------------------------ evaluating at each image's own resolution
def test_native_resolution_record_keeps_sizes_and_is_its_own_cache_identity():
    from dataloaders.preprocessing import Preprocessing
    from models.descriptor_cache import cache_key

    native, exact = Preprocessing((512, 512), resize="none"), Preprocessing((512, 512))
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8)
    assert native.transform()(image).shape == (3, 60, 90) and exact.transform()(image).shape == (3, 512, 512)
    # its own size passed back (eval.py, retrieve.py do) keeps it; another size asked for resizes to it
    assert native.with_size(None) == native.with_size((512, 512)) == native
    assert native.with_size((322, 322)) == Preprocessing((322, 322))
    assert Preprocessing.from_dict(native.as_dict()) == native
    assert cache_key("net", ["a.jpg"], native.as_dict(), "32") != cache_key("net", ["a.jpg"], exact.as_dict(), "32")
    assert native.describe() == ("each image at its own resolution, not resized (network built at 512 x 512), "
                                 "ImageNet mean/std")


def test_images_of_different_sizes_are_batched_by_size_in_their_order():
    from dataloaders.image_list import collate_by_size

    items = [(torch.zeros(3, 4, 6), 0, True), (torch.ones(3, 5, 5), 1, True), (torch.full((3, 4, 6), 2.0), 2, False)]
    groups = collate_by_size(items)
    assert [g[0].shape for g in groups] == [(2, 3, 4, 6), (1, 3, 5, 5)]
    assert [g[1].tolist() for g in groups] == [[0, 2], [1]] and groups[0][2].tolist() == [True, False]


# ------------------------------------------------------------------ one comparison table; released teachers
def tiny_release(name: str, architecture: dict, file_name: str, preprocessing):
    """A test-only release of a family at tiny widths (its file is put in the cache by the test)."""
    from models.releases import Release

    return Release(architecture, file_name, f"https://example.invalid/{file_name}", "https://example.invalid",
                   f"{name} (test)", preprocessing=preprocessing)


@pytest.fixture
def tiny_releases(tiny_dinov2, torch_home, monkeypatch) -> list[str]:
    """cosplace_resnet18_32 (the real record) and tiny MegaLoc and CliqueMining releases, their seeded files in
    torch.hub's cache as a user would have them (accepted by their hash)."""
    from safetensors.torch import save_file

    from dataloaders.preprocessing import Preprocessing
    from models.releases import RELEASES
    from release_layouts import megaloc_layout

    megaloc = RELEASES["megaloc_dinov2_8448"].architecture
    monkeypatch.setitem(RELEASES, "megaloc_tiny", tiny_release("MegaLoc", {
        **megaloc, "backbone_arch": "dinov2_vitt14", "image_size": [42, 42],
        "backbone_config": {**megaloc["backbone_config"], "num_trainable_blocks": 1},
        "agg_config": {"num_channels": 32, "num_clusters": 8, "cluster_dim": 4, "token_dim": 6, "out_dim": 24}},
        "megaloc_tiny.safetensors", Preprocessing((42, 42), resize="none")))
    clique = RELEASES["clique_mining_dinov2_8448"].architecture
    monkeypatch.setitem(RELEASES, "clique_mining_tiny", tiny_release("CliqueMining", {
        **clique, "backbone_arch": "dinov2_vitt14", "image_size": [42, 42],
        "backbone_config": {**clique["backbone_config"], "num_trainable_blocks": 1},
        "agg_config": {"num_channels": 32, "num_clusters": 8, "cluster_dim": 4, "token_dim": 6}},
        "cliquemining_tiny.ckpt", Preprocessing((42, 42))))
    cache_release("cosplace_resnet18_32", geolocalization_weights("ResNet18", 32), torch_home)
    cache_release("megaloc_tiny", seeded_state_dict(megaloc_layout(32, 2, 8, 4, 6, 24)), torch_home, save=save_file)
    cache_release("clique_mining_tiny", {"state_dict": seeded_state_dict(tiny_salad_layout()), "epoch": 3}, torch_home)
    return ["cosplace_resnet18_32", "megaloc_tiny", "clique_mining_tiny"]


def test_one_eval_command_tables_released_models_of_three_families_and_a_trained_checkpoint(
        synthetic, tiny_releases, tmp_path):
    import eval as eval_cli
    from main import main as train_main
    from tiny_cli import tiny_cli_args

    cli = train_main(tiny_cli_args(synthetic, tmp_path / "logs", name="mine") + ["--data.val_sets", "[pitts30k_val]"])
    mine = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    entries = [f"release:{name}" for name in tiny_releases] + [str(mine)]
    results = eval_cli.main(["--checkpoint", "[" + ", ".join(entries) + "]", "--benchmarks", "[pitts30k_val]",
                             "--data.pitts_root", str(synthetic["pitts"]), "--out_dir", str(tmp_path / "eval"),
                             "--num_workers", "0", "--device", "cpu", "--progress", "false"])
    labels = list(results)
    assert labels[:3] == tiny_releases and len(labels) == 4
    # each with its own preprocessing: the releases' authors' (own resolution, or 42 x 42), ours at its training size
    assert [results[n]["preprocessing"]["resize"] for n in labels] == ["none", "none", "exact", "exact"]
    assert [results[n]["descriptor_dim"] for n in labels] == [32, 24, 38, 32]
    assert all(0 <= results[n]["benchmarks"]["pitts30k_val"]["recall"]["1"] <= 1 for n in labels)
    table = (max((tmp_path / "eval").glob("version_*")) / "recalls.md").read_text()
    assert all(f"| {n} |" in table for n in labels)
    assert "cosplace_resnet18_32: own resolution; megaloc_tiny: own resolution; clique_mining_tiny: 42x42" in table


def test_released_architecture_of_another_family_teaches_a_student(synthetic, tiny_releases, tmp_path):
    import math

    from main import main as train_main
    from tiny_cli import tiny_cli_args

    # random (seeded) weights in CosPlace's released file and architecture teach a ResNet18 + MixVPR student
    cli = train_main(tiny_cli_args(synthetic, tmp_path, name="student") + [
        "--data.val_sets", "[pitts30k_val]", "--model.backbone_arch", "resnet18",
        "--model.distillation", '{"teacher_checkpoint": "release:cosplace_resnet18_32"}'])
    teacher = cli.model.teacher
    assert teacher.descriptor_dim == 32 and teacher.image_size is None  # the student's 32 x 32 images as they are
    assert math.isfinite(float(cli.trainer.callback_metrics["distill_loss"]))
    assert cli.trainer.global_step == 2 and not any(k.startswith("teacher") for k in cli.model.state_dict())


def test_release_names_that_do_not_exist_or_take_a_config_are_refused():
    from models.distillation import Teacher
    from models.evaluation import load_for_evaluation
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"release:cosplace_resnet50_4096: no release 'cosplace_resnet50_4096'; "
                                          r"the releases are \[.*'cosplace_resnet50_2048'"):
        load_for_evaluation("release:cosplace_resnet50_4096", {})
    with pytest.raises(ConfigError, match="is a release, with its own architecture: leave distillation.teacher_config"):
        Teacher.from_checkpoint("release:megaloc_dinov2_8448", backbone_arch="resnet18")


def test_teacher_with_another_normalisation_gets_its_own_input():
    from dataloaders.preprocessing import Preprocessing
    from models.distillation import Teacher
    from models.network import build_network

    net = build_network("resnet18", layers_to_crop=[4], agg_arch="GeM", image_size=(32, 32)).eval()
    net.preprocessing = Preprocessing((32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    from dataloaders.transforms import normalize_batch

    with torch.no_grad():
        expected = net(normalize_batch(pixels, (0.5,) * 3, (0.5,) * 3))
    torch.testing.assert_close(Teacher(net)(normalize_batch(pixels)), expected, atol=1e-5, rtol=1e-4)
