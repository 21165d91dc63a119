"""Every command line in README.md's bash blocks, tried as a newcomer would in a fresh clone.

A command that a clone can run (the synthetic data, the demo's checkpoint, the README's example file names)
is run in a clone-like working folder, shortened by flags where it trains (one epoch of two steps on the
tiny synthetic data): its exit status must be 0, it must create a new output folder, and every file it says
it wrote must exist. A command that needs what a clone does not hold (real data under /data, a published
recipe's GPU and ResNet50, a release file, a run folder of another recipe) is parsed by the command's own
parser: every flag must exist, and take the value the command line gives it. A program without a rule here
fails the test: a new command line in the README gets a rule (and so a check).
"""
import contextlib
import importlib.util
import io
import re
import shlex
import shutil
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

import eval as eval_cli
import retrieve
from main import main as train_main
from main import settings
from models.export import main as export_main
from models.export import parse_args as export_args
from utils.cli import run_command
from utils.plot_metrics import main as plot_main
from utils.plot_metrics import parse_args as plot_args

REPO = Path(__file__).resolve().parents[1]
# programs of other projects that the README shows (not ours to check)
EXTERNAL = {"tensorboard", "export", "torchrun", "srun", "sbatch", "pip", "git", "cd"}
# what a training command line is shortened by: the tiny synthetic data, one epoch of two steps
SHORT_EVALUATION = ["--data.synthetic_scale", "tiny", "--data.num_workers", "0", "--trainer.enable_progress_bar",
                    "false"]
SHORT_FIT = [*SHORT_EVALUATION, "--data.batch_size", "8", "--trainer.max_epochs", "1",
             "--trainer.limit_train_batches", "2"]
# the README's example file names, made in the clone (a checkpoint, the photos of "your own images")
EXAMPLE_CHECKPOINTS = ("last.ckpt", "best.ckpt", "other.ckpt")


def readme_commands(readme: Path = REPO / "README.md") -> list[tuple[int, list[str]]]:
    """(line number, words) of every command line in the README's ```bash blocks: continuation lines
    joined, comments dropped, words split as the shell splits them."""
    text = readme.read_text()
    commands = []
    for block in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
        first = text[: block.start(1)].count("\n") + 1
        lines = block.group(1).split("\n")
        i = 0
        while i < len(lines):
            start, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            words = shlex.split(line, comments=True)
            if words:
                commands.append((first + start, words))
            i += 1
    return commands


def make_recipe(target: str, makefile: Path = REPO / "Makefile") -> list[list[str]]:
    """The command lines of ``make <target>`` (``$(PY)`` read as ``python``); an AssertionError naming the
    target when the Makefile has none."""
    text = makefile.read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)*)", text, re.M)
    assert match, f"the README runs `make {target}` but the Makefile has no {target!r} target"
    lines = [line.strip() for line in match.group(1).splitlines() if line.strip()]
    return [shlex.split(line.replace("$(PY)", "python")) for line in lines]


def flags(words: list[str]) -> dict[str, Optional[str]]:
    """``{flag: value}`` of a command line's ``--flag value`` / ``--flag=value`` words (None: a switch such as
    ``--help``); a flag given twice keeps its last value, as the parsers do."""
    found = {}
    for i, word in enumerate(words):
        if not word.startswith("--"):
            continue
        name, _, value = word[2:].partition("=")
        if not value and i + 1 < len(words) and not words[i + 1].startswith("--"):
            value = words[i + 1]
        found[name] = value or None
    return found


def plain(value):
    """A parsed setting as plain data (tuples as lists, namespaces as dicts, paths as strings)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def assert_flags_take_effect(words: list[str], config, skip=("config", "help", "print_config")) -> None:
    """Every ``--a.b value`` of ``words`` is the setting ``a.b`` of the parsed ``config``, with that value."""
    for name, value in flags(words).items():
        if name in skip:
            continue
        got = config
        for part in name.split("."):
            assert part in got, f"--{name}: no such setting after parsing"
            got = got[part]
        expected = yaml.safe_load(value) if value is not None else True
        # a list setting takes a single value as its one item (bench/model_costs.py --models resnet18-1024)
        assert plain(got) in (expected, [expected]) or str(plain(got)) == str(value), \
            f"--{name} {value!r} parsed as {got!r}"


def output(function: Callable, argv: list[str]) -> tuple[int, str]:
    """(exit status, stdout and stderr) of ``function(argv)`` run as the command line runs it
    (``utils.cli.run_command``: a user error is status 2)."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            result = run_command(function, argv)
            status = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return status, captured.getvalue()


def versions(root: Path) -> set[Path]:
    """Every version folder under ``root``."""
    return {p for p in root.rglob("version_*") if p.is_dir()}


def existing(path: str, clone: Path) -> bool:
    """Whether ``path`` (relative to the clone, or absolute) exists in the clone."""
    return (clone / path).exists()


@pytest.fixture(scope="module")
def clone(synthetic, tmp_path_factory) -> Path:
    """A working folder laid out like a fresh clone after ``make train``: configs/, the synthetic data under
    LOGS/synthetic_data (the session's tiny sets), the demo's run LOGS/synthetic_demo/version_0 (trained
    here, shortened), and the README's example names: last.ckpt, best.ckpt, other.ckpt (the demo's
    checkpoint) and my_photos/{db,queries}."""
    folder = tmp_path_factory.mktemp("clone")
    (folder / "configs").symlink_to(REPO / "configs")
    (folder / "LOGS").mkdir()
    (folder / "LOGS" / "synthetic_data").symlink_to(Path(synthetic["pitts"]).parents[1])
    with contextlib.chdir(folder):
        status, printed = output(train_main, SHORT_FIT)
    assert status == 0, printed[-3000:]
    ckpt = folder / "LOGS" / "synthetic_demo" / "version_0" / "checkpoints" / "last.ckpt"
    for name in EXAMPLE_CHECKPOINTS:
        shutil.copy(ckpt, folder / name)
    photos = sorted((Path(synthetic["pitts"]) / "000").glob("*.jpg"))
    for part, chosen in (("db", photos[:12]), ("queries", photos[12:15])):
        (folder / "my_photos" / part).mkdir(parents=True)
        for photo in chosen:
            shutil.copy(photo, folder / "my_photos" / part / photo.name)
    return folder


def needs_more_than_a_clone(words: list[str], clone: Path) -> Optional[str]:
    """Why the command cannot run in a clone (None: it can): real data, a published recipe, a missing file."""
    given = flags(words)
    if any("/data/" in w for w in words):
        return "real data under /data"
    config = given.get("config")
    if config and not Path(config).name.startswith("synthetic_demo"):
        return f"the published recipe {config}"
    for name in ("checkpoint", "ckpt_path", "model.init_from", "database", "queries"):
        value = given.get(name)
        paths = yaml.safe_load(value) if value and value.startswith("[") else [value] if value else []
        missing = [p for p in paths if not existing(p, clone)]
        if missing:
            return f"--{name} {missing[0]} (not in a clone)"
    return None


def said_paths(printed: str) -> list[str]:
    """The files and folders a command says it wrote: main.py's closing summary, eval.py's ``written:``,
    retrieve.py's ``written to``, export's ``wrote``, plot_metrics' ``written``."""
    found = []
    if "Run folder: " in printed:
        lines = printed[printed.index("Run folder: "):].splitlines()
        found.append(lines[0].split(": ", 1)[1])
        for line in lines[1:]:
            if not line.startswith("  "):
                break
            found += re.findall(r"(\S+\.(?:ckpt|csv|md|yaml|txt))", line)
    for line in printed.splitlines():
        if line.startswith("written: "):
            found += line[len("written: "):].split(", ")
        elif line.startswith(("written ", "wrote ")):
            found.append(line.split()[1])
        elif " written to " in line:
            found.append(line.split(" written to ")[1].split(",")[0].strip())
    return found


def check_ran(words: list[str], function: Callable, argv: list[str], clone: Path, new_folder: bool = True) -> str:
    """Run the command in the clone: status 0, a new output folder (``new_folder``), every file it names exists."""
    before = versions(clone)
    with contextlib.chdir(clone):
        status, printed = output(function, argv)
    assert status == 0, f"{shlex.join(words)} exited with {status}:\n{printed[-3000:]}"
    said = said_paths(printed)
    assert said, f"{shlex.join(words)} does not say where its results went:\n{printed[-2000:]}"
    missing = [p for p in said if not existing(p, clone)]
    assert not missing, f"{shlex.join(words)} names files it did not write: {missing}"
    if new_folder:
        created = versions(clone) - before
        assert len(created) == 1, f"{shlex.join(words)} made {len(created)} new version folders"
        assert any((clone / p).resolve().is_relative_to(created.pop().resolve()) for p in said)
    return printed


def check_main(words: list[str], clone: Path) -> None:
    """``python main.py ...``: --help and --print_config run; a command that needs more than a clone is parsed;
    the others run, shortened."""
    args = words[2:]
    given = flags(args)
    if "help" in given or "h" in given:
        with contextlib.chdir(clone):
            status, printed = output(train_main, args)
        assert status == 0 and "--data.batch_size" in printed and "--trainer.max_epochs" in printed
        assert not re.search(r"^\s+predict\s", printed, re.M)
        return
    if "print_config" in given:
        with contextlib.chdir(clone):
            status, printed = output(train_main, args)
        assert status == 0, printed[-2000:]
        resolved = yaml.safe_load(printed)
        assert_flags_take_effect(args, resolved)
        return
    reason = needs_more_than_a_clone(args, clone)
    with contextlib.chdir(clone):
        config = settings(args)
    assert_flags_take_effect(args, config[config.subcommand])
    if reason:
        return
    subcommand = config.subcommand
    short = SHORT_FIT if subcommand == "fit" else SHORT_EVALUATION
    if subcommand == "fit" and "ckpt_path" in given:
        short = [*short, "--trainer.max_epochs", "2"]  # the demo's checkpoint has trained one epoch
    check_ran(words, train_main, [*args, *short], clone)


def check_tool(words: list[str], clone: Path, parse: Callable, run: Callable, short=(), new_folder=True) -> None:
    """eval.py, retrieve.py, export, plot_metrics: parsed, then run when a clone holds what it needs."""
    args = words[2:] if words[1] != "-m" else words[3:]
    with contextlib.chdir(clone):
        config = parse(args)
    assert_flags_take_effect(args, config)
    if needs_more_than_a_clone(args, clone):
        return
    positional = [w for i, w in enumerate(args)
                  if not w.startswith("--") and (i == 0 or not args[i - 1].startswith("--"))]
    if any(not existing(p, clone) for p in positional):
        return  # e.g. plot_metrics of another recipe's run folder
    synthetic = ["--data.synthetic_scale", "tiny"] if flags(args).get("data.synthetic") == "true" else []
    check_ran(words, run, [*args, *synthetic, *short], clone, new_folder)


def check_bench(words: list[str]) -> None:
    """``python bench/<script>.py ...``: parsed by the script's ``parse_args``."""
    path = REPO / words[1]
    assert path.is_file(), f"{words[1]} does not exist"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "parse_args"), f"{words[1]} has no parse_args: give it one to be checked here"
    assert_flags_take_effect(words[2:], module.parse_args(words[2:]))


def check_command(words: list[str], clone: Path) -> None:
    """The rule of the command's program."""
    if words[0] in EXTERNAL:
        return
    if words[0] == "make":
        for line in make_recipe(words[1]):
            if line[:3] == ["python", "-m", "pytest"]:
                continue  # `make test` runs this very suite
            check_command(line, clone)
        return
    assert words[0] == "python", f"no rule for {shlex.join(words)}: add one to tests/test_readme_commands.py"
    if words[1] == "main.py":
        check_main(words, clone)
    elif words[1] == "eval.py":
        check_tool(words, clone, eval_cli.parse_args, eval_cli.main, ["--progress", "false"])
    elif words[1] == "retrieve.py":
        check_tool(words, clone, retrieve.parse_args, retrieve.main, ["--progress", "false"])
    elif words[1:3] == ["-m", "models.export"]:
        check_tool(words, clone, export_args, export_main, new_folder=False)
    elif words[1:3] == ["-m", "utils.plot_metrics"]:
        check_tool(words, clone, plot_args, plot_main, new_folder=False)
    elif words[1].startswith("bench/"):
        check_bench(words)
    else:
        raise AssertionError(f"no rule for {shlex.join(words)}: add one to tests/test_readme_commands.py")


COMMANDS = readme_commands()


def test_the_readme_has_command_lines_of_every_kind():
    programs = {" ".join(w[:2]) for _, w in COMMANDS}
    assert {"make train", "python main.py", "python eval.py", "python retrieve.py"} <= programs


@pytest.mark.parametrize("words", [w for _, w in COMMANDS], ids=[f"L{n}:{' '.join(w[:3])}" for n, w in COMMANDS])
def test_readme_command_runs_or_parses(words, clone):
    check_command(words, clone)
