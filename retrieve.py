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
"""
import csv
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from jsonargparse.typing import PositiveInt

from models.commands import BENCHMARK_DATA, TRAINING_DATA, architecture_settings, checkpoints_of, command_parser
from models.commands import refuse_unused_flags, resolve_faiss_gpu
from models.descriptor_cache import network_identity, usable_cache_dir
from models.evaluation import load_for_evaluation, model_labels
from models.inference import cached_embed_paths, image_paths, search
from utils.allocator import keep_freed_memory
from utils.cli import run_command
from utils.errors import ConfigError, DataError
from utils.files import reserved_version
from utils.visualize import retrieval_figure


def parse_args(argv: Optional[Sequence[str]] = None):
    """The settings of retrieve.py."""
    parser = command_parser("python retrieve.py", __doc__.split("\n")[0])
    parser.add_argument("--database", type=str, required=True, help="folder, .txt list or image file of the database")
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
    db_paths = image_paths(cfg.database)
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


def retrieve(cfg, net, identity, label: str, size, db_paths: list[str], q_paths: list[str],
             cache_dir: Optional[Path], out_dir: Path) -> Path:
    """Embed database and queries, search, write matches.csv and the pictures into ``out_dir``."""
    embedded = {}
    for part, paths in (("database", db_paths), ("queries", q_paths)):
        descriptors, unreadable, reused = cached_embed_paths(
            net, paths, cache_dir, f"{part}-{label}", identity, size, cfg.precision, cfg.data.skip_unreadable,
            batch_size=cfg.batch_size, device=cfg.device, num_workers=cfg.num_workers, progress=cfg.progress,
            name=f"{label} ({cfg.checkpoint})")
        keep = np.setdiff1d(np.arange(len(paths)), unreadable)
        if len(unreadable):
            print(f"{part}: skipped {len(unreadable)} unreadable image(s), e.g. {paths[unreadable[0]]}")
        embedded[part] = (descriptors[keep], [paths[i] for i in keep])
        print(f"{part}: {len(keep)} image(s){' (cached descriptors)' if reused else ''}")
    (db, db_kept), (q, q_kept) = embedded["database"], embedded["queries"]
    if not len(db_kept):
        raise DataError(f"no readable database image in {cfg.database}")
    distances, indices = search(db, q, cfg.top_k, faiss_gpu=cfg.faiss_gpu)
    csv_path = out_dir / "matches.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "rank", "match", "distance", "similarity"])
        for query, row_d, row_i in zip(q_kept, distances, indices):
            for rank, (d, i) in enumerate(zip(row_d, row_i), start=1):
                writer.writerow([query, rank, db_kept[i], f"{d:.6f}", f"{1 - d / 2:.6f}"])
    shown = len(q_kept) if cfg.visualize < 0 else min(cfg.visualize, len(q_kept))
    for n in range(shown):
        captions = [f"#{r + 1} sim {1 - d / 2:.3f}" for r, d in enumerate(distances[n])]
        picture = retrieval_figure(q_kept[n], [db_kept[i] for i in indices[n]], None, captions)
        picture.save(out_dir / f"query{n:05d}.jpg", quality=92)
    for query, row_i, row_d in list(zip(q_kept, indices, distances))[:5]:
        print(f"{query} -> {db_kept[row_i[0]]} (similarity {1 - row_d[0] / 2:.3f})")
    print(f"top-{indices.shape[1]} matches of {len(q_kept)} queries written to {csv_path}"
          + (f", {shown} picture(s) to {out_dir}" if shown else ""))
    return csv_path


if __name__ == "__main__":
    keep_freed_memory()  # CPU embedding without glibc's page-fault cycle (utils/allocator.py)
    run_command(main)
