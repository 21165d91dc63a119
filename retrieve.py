"""Place recognition on your own images: the top-K database matches of each query image.

    python retrieve.py --checkpoint LOGS/my_run/version_0/checkpoints/last.ckpt \\
        --database my_photos/database --queries my_photos/queries --top_k 5 --out_dir LOGS/retrieve/my_photos
    python retrieve.py --checkpoint "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt" \\
        --config configs/mixvpr_resnet50_4096.yaml --database db_list.txt --queries '[q1.jpg, q2.jpg]' --visualize -1

Settings are those of main.py and eval.py (``--config``, ``--model.*`` for a bare state_dict's
architecture). ``--database`` and ``--queries`` take a folder (every image under it: JPEG, PNG, WebP,
TIFF, BMP ...), a ``.txt``
file with one image path per line, an image file, or a list of image files. Each run writes into a new
``<out_dir>/version_<n>/``: ``matches.csv`` (query, rank, match, distance, similarity: squared L2 distance
and cosine similarity of the L2-normalised descriptors) and, with ``--visualize N``, pictures of the first N
queries with their matches (grey frames: no ground truth to say right or wrong). Descriptors are cached
under ``<out_dir>/descriptors`` (database and queries apart, so new queries against the same database
embed only the queries). Images are embedded at the size the checkpoint records (its validation size),
else the model's; ``--data.eval_image_size`` overrides. A run that fails leaves no empty version folder.

The database is searched exactly, or with ``--search.index`` (a faiss index_factory string: IVF4096,PQ64,
HNSW32, BFlat ...; ``--search.params``, ``--search.memory_budget``, ``--search.whitening``). With
``--database_index <folder>`` the database's index is built there once (with its record: model, preprocessing,
search settings, image list) and later runs query it without embedding or indexing the database again
(``--database`` may then be left out); an index built with another model is an error naming both.
"""
import csv
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from jsonargparse.typing import PositiveInt

from models.commands import BENCHMARK_DATA, TRAINING_DATA, architecture_settings, checkpoints_of, command_parser
from models.commands import refuse_unused_flags, resolve_faiss_gpu, searcher_of
from models.database_index import database_index, model_record
from models.descriptor_cache import network_identity, usable_cache_dir
from models.evaluation import learned_whitening, load_for_evaluation, model_labels
from models.inference import cached_embed_paths, image_paths
from utils.allocator import keep_freed_memory
from utils.cli import run_command
from utils.errors import ConfigError
from utils.files import reserved_version
from utils.visualize import retrieval_figure


def parse_args(argv: Optional[Sequence[str]] = None):
    """The settings of retrieve.py."""
    parser = command_parser("python retrieve.py", __doc__.split("\n")[0])
    parser.add_argument("--database", type=Optional[str], default=None,
                        help="folder, .txt list or image file of the database (optional with a built --database_index)")
    parser.add_argument("--database_index", type=Optional[str], default=None,
                        help="folder of the database's index: built there when absent, else queried as built")
    parser.add_argument("--queries", type=Union[list[str], str], required=True,
                        help="folder, .txt list, image file, or a list of image files")
    parser.add_argument("--top_k", type=PositiveInt, default=5, help="matches per query")
    parser.add_argument("--out_dir", type=str, default="LOGS/retrieve", help="results go to <out_dir>/version_<n>")
    parser.add_argument("--visualize", type=int, default=0, help="pictures of the first N queries and their matches (-1: all)")
    cfg = parser.parse_args(argv)
    # a flag this command accepts takes effect: training-only and benchmark ones are refused
    refuse_unused_flags(parser, argv, "python retrieve.py", TRAINING_DATA + BENCHMARK_DATA,
                        aliases=("model.faiss_gpu",))
    resolve_faiss_gpu(cfg, argv)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Run the retrieval; returns the path of matches.csv."""
    cfg = parse_args(argv)
    checkpoints = checkpoints_of(cfg)
    if len(checkpoints) != 1:
        raise ConfigError(f"--checkpoint: retrieval uses one model, got {len(checkpoints)}")
    if cfg.database is None and cfg.database_index is None:
        raise ConfigError("give --database (images to search), or --database_index (a folder holding a built index)")
    db_paths = image_paths(cfg.database) if cfg.database is not None else None
    q_paths = image_paths(cfg.queries)
    out_root = Path(cfg.out_dir)
    cache_dir = usable_cache_dir(cfg.cache_dir or out_root / "descriptors") if cfg.cache else None
    net, _, _ = load_for_evaluation(checkpoints[0], architecture_settings(cfg), cfg.data.eval_image_size)
    label = model_labels(checkpoints)[0]
    size = net.preprocessing.image_size
    identity = network_identity(net) if cache_dir is not None else None
    with reserved_version(out_root) as out_dir:
        csv_path = retrieve(cfg, net, identity, label, size, db_paths, q_paths, cache_dir, out_dir)
    return csv_path


def retrieve(cfg, net, identity, label: str, size, db_paths: Optional[list[str]], q_paths: list[str],
             cache_dir: Optional[Path], out_dir: Path) -> Path:
    """Embed (or open the index of) the database and embed the queries, search, write matches.csv and the
    pictures into ``out_dir``."""
    settings = {"image_size": size, "precision": cfg.precision, "skip_unreadable": cfg.data.skip_unreadable,
                "batch_size": cfg.batch_size, "device": cfg.device, "num_workers": cfg.num_workers,
                "progress": cfg.progress, "name": f"{label} ({cfg.checkpoint})", "cache_dtype": cfg.cache_dtype}

    def embed(paths, folder, part):
        descriptors, unreadable, reused = cached_embed_paths(
            net, paths, folder or cache_dir, f"{part}-{label}" if folder is None else part, identity, size,
            cfg.precision, cfg.data.skip_unreadable, dtype=cfg.cache_dtype, batch_size=cfg.batch_size,
            device=cfg.device, num_workers=cfg.num_workers, progress=cfg.progress, name=settings["name"])
        if len(unreadable):
            print(f"{part}: skipped {len(unreadable)} unreadable image(s), e.g. {paths[unreadable[0]]}")
        print(f"{part}: {len(paths) - len(unreadable)} image(s){' (cached descriptors)' if reused else ''}")
        return descriptors, unreadable, reused

    searcher = searcher_of(cfg)
    searcher.check(searcher.whitening_dim or net.descriptor_dim)  # before anything is embedded
    model = model_record(label, cfg.checkpoint, identity or network_identity(net))
    db = database_index(Path(cfg.database_index) if cfg.database_index else None, model,
                        net.preprocessing.with_size(size).as_dict(), cfg.precision, searcher, db_paths, embed,
                        lambda: learned_whitening(net, identity, searcher, settings, cache_dir))
    if db.folder is not None:
        print(db.describe())
    db_kept = db.images
    descriptors, unreadable, _ = embed(q_paths, None, "queries")
    keep = np.setdiff1d(np.arange(len(q_paths)), unreadable)
    q, q_kept = np.asarray(descriptors[keep], dtype=np.float32), [q_paths[i] for i in keep]
    distances, indices = db.search(q, cfg.top_k)
    # squared L2 on L2-normalised descriptors: cosine similarity 1 - d / 2; binary codes: Hamming bits, no similarity
    similarity = (lambda d: "") if db.index.searcher.binary else (lambda d: f"{1 - d / 2:.6f}")
    csv_path = out_dir / "matches.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "rank", "match", "distance", "similarity"])
        for query, row_d, row_i in zip(q_kept, distances, indices):
            for rank, (d, i) in enumerate(zip(row_d, row_i), start=1):
                if i < 0:  # an approximate index found fewer than top_k
                    break
                writer.writerow([query, rank, db_kept[i], f"{d:.6f}", similarity(d)])
    shown = len(q_kept) if cfg.visualize < 0 else min(cfg.visualize, len(q_kept))
    for n in range(shown):
        found = indices[n] >= 0
        captions = [f"#{r + 1} " + (f"sim {similarity(d)[:5]}" if similarity(d) else f"{d:.0f} bits")
                    for r, d in enumerate(distances[n][found])]
        picture = retrieval_figure(q_kept[n], [db_kept[i] for i in indices[n][found]], None, captions)
        picture.save(out_dir / f"query{n:05d}.jpg", quality=92)
    for query, row_i, row_d in list(zip(q_kept, indices, distances))[:5]:
        print(f"{query} -> {db_kept[row_i[0]]} ({f'similarity {similarity(row_d[0])[:5]}' if similarity(row_d[0]) else f'{row_d[0]:.0f} bits'})")
    print(f"top-{indices.shape[1]} matches of {len(q_kept)} queries written to {csv_path}"
          + (f", {shown} picture(s) to {out_dir}" if shown else ""))
    return csv_path


if __name__ == "__main__":
    keep_freed_memory()  # CPU embedding without glibc's page-fault cycle (utils/allocator.py)
    run_command(main)
