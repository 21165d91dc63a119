"""The retrieval command and the Python API on one's own images, where the right answer is known."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import retrieve
from main import load_model
from models import VPRModel, VPRNet
from models.inference import embed, search
from utils.errors import DataError

ARCH = dict(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="GeM", image_size=[32, 32])
FLAGS = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch", "GeM",
         "--model.agg_config", "{}", "--data.image_size", "[32, 32]", "--num_workers", "0", "--device", "cpu",
         "--progress", "false"]


@pytest.fixture(scope="module")
def photos(synthetic, tmp_path_factory):
    """A database folder of 15 Pittsburgh views and queries that are copies of database images 3, 7
    and 11 under other names (one re-saved as PNG): each query's answer is known."""
    root = tmp_path_factory.mktemp("photos")
    db = sorted((synthetic["pitts"] / "000").glob("*.jpg"))[:15]
    (root / "db").mkdir()
    (root / "queries").mkdir()
    for p in db:
        shutil.copy(p, root / "db" / p.name)
    answers = {}
    for n, i in enumerate((3, 7, 11)):
        query = root / "queries" / (f"query_{n}.png" if n == 1 else f"query_{n}.jpg")
        if n == 1:
            Image.open(db[i]).save(query)
        else:
            shutil.copy(db[i], query)
        answers[str(query)] = str(root / "db" / db[i].name)
    torch.manual_seed(0)
    torch.save(VPRModel(**ARCH).state_dict(), root / "gem.pth")
    return root, answers


def read_matches(path: Path) -> dict[str, list[str]]:
    """matches.csv -> {query: [match at rank 1, 2, ...]}."""
    matches: dict[str, list[str]] = {}
    for row in csv.DictReader(path.open()):
        matches.setdefault(row["query"], []).append(row["match"])
    return matches


def test_retrieve_finds_the_copied_image_first(photos, tmp_path):
    root, answers = photos
    csv_path = retrieve.main(["--checkpoint", str(root / "gem.pth"), "--database", str(root / "db"), "--queries",
                              str(root / "queries"), "--top_k", "4", "--out_dir", str(tmp_path), "--visualize", "2",
                              *FLAGS])
    matches = read_matches(csv_path)
    assert set(matches) == set(answers) and all(len(m) == 4 for m in matches.values())
    assert {q: m[0] for q, m in matches.items()} == answers
    assert sorted(p.name for p in csv_path.parent.glob("query*.jpg")) == ["query00000.jpg", "query00001.jpg"]


def test_retrieve_reuses_the_database_descriptors_for_new_queries(photos, tmp_path, monkeypatch):
    root, answers = photos
    run = lambda *queries: retrieve.main(["--checkpoint", str(root / "gem.pth"), "--database", str(root / "db"),
                                          "--queries", json.dumps(list(queries)), "--out_dir", str(tmp_path), *FLAGS])
    first = sorted(answers)
    run(*first)
    images_seen = []
    original = VPRNet.forward
    monkeypatch.setattr(VPRNet, "forward", lambda model, x: images_seen.append(len(x)) or original(model, x))
    matches = read_matches(run(first[0]))
    assert sum(images_seen) == 1 and matches[first[0]][0] == answers[first[0]]


def test_unreadable_query_stops_the_run_or_is_skipped_when_asked(photos, tmp_path, capsys):
    root, answers = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    args = ["--checkpoint", str(root / "gem.pth"), "--database", str(root / "db"), "--queries",
            json.dumps([*sorted(answers), str(broken)]), "--out_dir", str(tmp_path), *FLAGS]
    with pytest.raises(DataError, match=f"cannot read image {broken}"):
        retrieve.main(args)
    matches = read_matches(retrieve.main(args + ["--data.skip_unreadable", "true"]))
    assert set(matches) == set(answers)
    assert f"queries: skipped 1 unreadable image(s), e.g. {broken}" in capsys.readouterr().out


def test_python_api_loads_embeds_a_folder_and_searches(photos):
    root, answers = photos
    model = load_model(root / "gem.pth", **ARCH)
    assert not model.training
    db = embed(model, root / "db", batch_size=4, progress=False)
    queries = sorted(answers)
    q = embed(model, queries, progress=False)
    assert db.shape == (15, model.descriptor_dim) and np.allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)
    distances, indices = search(db, q, k=3)
    assert indices.shape == (3, 3) and np.all(np.diff(distances, axis=1) >= 0)
    db_paths = sorted(str(p) for p in (root / "db").glob("*.jpg"))
    assert [db_paths[i] for i in indices[:, 0]] == [answers[p] for p in queries]
