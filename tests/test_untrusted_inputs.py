"""Inputs a user does not control: configs, images and downloaded weights are checked before they can cost
memory, time or trust. A config whose aliases expand to billions of values, a class_path naming any module,
a tiny PNG of 25000 x 25000 pixels, a tampered or truncated release file: each is one clear line, fast."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    assert "100,000 values" in lines[0] and "aliases" in lines[0]
    assert "lol" not in result["stdout"] + result["stderr"]  # nothing printed as a config


def test_alias_bomb_in_a_string_value_is_not_expanded(config_attacks):
    result = config_attacks["value_in_config"]
    assert result["code"] == 2 and result["seconds"] < 2.0, result
    assert len(result["stderr"].strip().splitlines()) == 1 and "max_epochs" in result["stderr"]


@pytest.mark.parametrize("source", ["class_path", "class_path_flag"])
def test_class_path_of_a_module_not_allowed_is_refused_before_it_is_imported(config_attacks, source):
    result = config_attacks[source]
    assert result["code"] == 2
    assert result["stderr"].strip().splitlines() == [
        "error: class_path 'this.Foo' is refused: configs import classes only from the modules lightning, "
        "pytorch_lightning, torch, torchmetrics, models, dataloaders, utils, bench, tiny_cli (nothing was "
        "imported). If you trust 'this', allow it with VPR_ALLOWED_MODULES=this"]
    assert "Zen of Python" not in result["stdout"]
    assert not config_attacks["this_imported"]
