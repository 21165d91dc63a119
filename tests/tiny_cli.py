"""Command-line arguments that train a tiny model on the tiny synthetic data in seconds (shared by tests)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_cli_args(synthetic: dict, logs: Path, epochs: int = 1, name: str = "synthetic_demo") -> list[str]:
    """``main()`` arguments: the demo config on the tiny data, 32 x 32 images, 2 batches of 4 places."""
    return [
        "--config", str(REPO / "configs" / "synthetic_demo.yaml"),
        "--data.synthetic", "false",
        "--data.gsv_root", str(synthetic["gsv_cities"]),
        "--data.pitts_root", str(synthetic["pitts"]),
        "--data.msls_root", str(synthetic["msls"]),
        "--data.cities", "[Synthville, Pixelburg]",
        "--data.image_size", "[32, 32]",
        "--data.batch_size", "4",
        "--data.num_workers", "0",
        "--model.agg_config", '{"out_channels": 16, "mix_depth": 1, "out_rows": 2}',
        "--trainer.max_epochs", str(epochs),
        "--trainer.limit_train_batches", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(logs),
        "--trainer.logger.init_args.save_dir", str(logs),
        "--trainer.logger.init_args.name", name,
    ]
