"""Retrieve, for each query image, its top-K matches in a database of one's own images (no ground truth).

    python retrieve.py --checkpoint LOGS/my_run/version_0/checkpoints/last.ckpt \\
        --database my_photos/database --queries my_photos/queries --top-k 5 --out-dir LOGS/retrieve/my_photos
    python retrieve.py --checkpoint resnet50_MixVPR_4096.ckpt --config configs/mixvpr_resnet50_4096.yaml \\
        --database db_list.txt --queries q1.jpg q2.jpg --visualize -1

``--database`` and ``--queries`` take a folder (every .jpg/.jpeg/.png under it), a ``.txt`` file with
one image path per line, or image files. Writes ``matches.csv`` (query, rank, match, distance,
similarity: squared L2 distance and cosine similarity of the L2-normalised descriptors) under
``--out-dir``; descriptors are cached under ``<out-dir>/descriptors`` (database and queries apart, so
new queries against the same database embed only the queries); ``--visualize N`` draws the first N
queries with their matches (grey frames: no ground truth to say right or wrong).
"""
import argparse
import csv
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from eval import add_model_arguments, load_checkpoint, model_labels
from utils.inference import cached_embed_paths, image_paths, search
from utils.visualize import retrieval_figure


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line of retrieve.py."""
    parser = argparse.ArgumentParser(prog="python retrieve.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    add_model_arguments(parser)
    parser.add_argument("--database", required=True, help="folder, .txt list or image file of the database")
    parser.add_argument("--queries", nargs="+", required=True, help="folder, .txt list, or image files")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=Path("LOGS/retrieve"))
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="pictures of the first N queries and their matches (-1: all)")
    args = parser.parse_args(argv)
    if len(args.checkpoint) != 1:
        parser.error("--checkpoint: retrieval uses one model")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Run the retrieval; returns the path of matches.csv."""
    args = parse_args(argv)
    db_paths = image_paths(args.database)
    q_paths = image_paths(args.queries[0]) if len(args.queries) == 1 else image_paths(args.queries)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = None if args.no_cache else (args.cache_dir or out_dir / "descriptors")
    model, fingerprint = load_checkpoint(args.checkpoint[0], args, faiss_gpu=args.faiss_gpu)
    label = model_labels(args.checkpoint)[0]
    size = args.image_size or model.image_size
    embedded = {}
    for part, paths in (("database", db_paths), ("queries", q_paths)):
        descriptors, unreadable, reused = cached_embed_paths(
            model, paths, cache_dir, f"{part}-{label}", fingerprint, size, args.precision, args.skip_unreadable,
            batch_size=args.batch_size, device=args.device, num_workers=args.num_workers,
            progress=not args.no_progress)
        keep = np.setdiff1d(np.arange(len(paths)), unreadable)
        if len(unreadable):
            print(f"{part}: skipped {len(unreadable)} unreadable image(s), e.g. {paths[unreadable[0]]}")
        embedded[part] = (descriptors[keep], [paths[i] for i in keep])
        print(f"{part}: {len(keep)} image(s){' (cached descriptors)' if reused else ''}")
    (db, db_kept), (q, q_kept) = embedded["database"], embedded["queries"]
    if not len(db_kept):
        raise ValueError(f"no readable database image in {args.database}")
    distances, indices = search(db, q, args.top_k, faiss_gpu=args.faiss_gpu)
    csv_path = out_dir / "matches.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "rank", "match", "distance", "similarity"])
        for query, row_d, row_i in zip(q_kept, distances, indices):
            for rank, (d, i) in enumerate(zip(row_d, row_i), start=1):
                writer.writerow([query, rank, db_kept[i], f"{d:.6f}", f"{1 - d / 2:.6f}"])
    shown = len(q_kept) if args.visualize < 0 else min(args.visualize, len(q_kept))
    for n in range(shown):
        captions = [f"#{r + 1} sim={1 - d / 2:.3f}" for r, d in enumerate(distances[n])]
        picture = retrieval_figure(q_kept[n], [db_kept[i] for i in indices[n]], None, captions)
        picture.save(out_dir / f"query{n:05d}.jpg", quality=92)
    for query, row_i, row_d in list(zip(q_kept, indices, distances))[:5]:
        print(f"{query} -> {db_kept[row_i[0]]} (similarity {1 - row_d[0] / 2:.3f})")
    print(f"top-{indices.shape[1]} matches of {len(q_kept)} queries written to {csv_path}"
          + (f", {shown} picture(s) to {out_dir}" if shown else ""))
    return csv_path


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
