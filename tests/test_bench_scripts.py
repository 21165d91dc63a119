"""The benchmark scripts that the GPU check runs still run against today's code (tiny settings, on the CPU).

They are run as programs, the way bench/gpu_check.sh runs them: a device session is minutes long, so a
script broken by a change of the library (an optimizer API, a renamed setting) must fail here, not there.
Figures are not checked (benchmarks measure; tests do not time), only that each prints its table.
"""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(*args: str, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of a printed Markdown table's body rows."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_memory_benchmark_measures_a_training_step_per_option():
    out = run_bench("bench/memory.py", "--configs", "configs/synthetic_demo.yaml", "--options", "plain",
                    "checkpointing", "--places", "2", "3", "--threads", "1")
    rows = table_rows(out)
    assert [row[:2] for row in rows] == [["synthetic_demo", "plain"], ["synthetic_demo", "checkpointing"]]


def test_train_overhead_benchmark_pairs_lightning_and_bare_steps():
    out = run_bench("bench/train_overhead.py", "--places", "4", "--steps", "3", "--warmup", "1", "--threads", "1")
    [row] = table_rows(out)
    assert row[0] == "synthetic_demo" and row[1] == "16"  # 4 places x 4 images
    assert float(row[-2]) > 0  # the median ratio Lightning / bare


def test_gpu_check_smoke_run_on_the_cpu(tmp_path):
    out = run_bench("bench/gpu_check.py", "--device", "cpu", "--config", "configs/synthetic_demo.yaml",
                    "--precision", "32-true", "--steps", "1", "--warmup", "1", "--places", "2", "--image-size", "48",
                    "64", "--images", "4", "--eval-images", "8", "--workers", "0", "--no-faiss",
                    "--cache", str(tmp_path / "jpegs"), "--out", str(tmp_path / "gpu_check.md"), timeout=600)
    rows = table_rows(out)
    assert (tmp_path / "gpu_check.md").is_file() and len(rows) >= 4
    assert all(float(row[1].replace(",", "")) > 0 for row in rows[:4])  # images/s of the three training runs and eval


def test_deployment_benchmark_prints_float_and_int8_rows(synthetic, tmp_path):
    import torch

    from models import VPRModel

    torch.manual_seed(0)
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR", image_size=(32, 32),
                     agg_config={"out_channels": 16, "mix_depth": 1, "out_rows": 2}).eval()
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    out = run_bench("bench/deployment.py", "--checkpoints", f"tiny={ckpt}", "--synthetic-dir",
                    str(synthetic["pitts"].parents[1]), "--scale", "tiny", "--timing-size", "32", "32", "--reps", "1",
                    "--batch", "2", "--threads", "1", "--calibration-images", "8", "--held-out-images", "4",
                    "--out", str(tmp_path / "deployment.md"))
    rows = table_rows(out)
    assert [row[:2] for row in rows] == [["tiny", "float32"], ["tiny", "float16"], ["tiny", "int8"]]
    sizes = {row[1]: float(row[2]) for row in rows}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]  # int8 weights: about a quarter of float32's bytes
    assert [row[4] for row in rows] == ["128", "64", "128"]  # descriptor bytes: 32-d float32, float16, float32
    assert (tmp_path / "deployment.md").read_text().startswith("| model | precision |")


def test_search_scale_benchmark_measures_each_index_against_exact_search(tmp_path):
    out = run_bench("bench/search_scale.py", "indexes", "--n", "2000", "--d", "32", "--work", str(tmp_path),
                    "--indexes", "Flat", "HNSW8", "--params", "", "efSearch=32", "--budget", "64MB")
    rows = table_rows(out)
    assert [row[1] for row in rows] == ["Flat", "HNSW8"]
    assert rows[0][7] == "100.0 / 100.0 / 100.0"  # exact search finds the exact neighbours
    out = run_bench("bench/search_scale.py", "exact", "--n", "2000", "--d", "32", "--work", str(tmp_path),
                    "--budget", "2MB")
    [row] = table_rows(out)
    assert row[1] == "2MB" and int(row[2]) > 1  # shards
