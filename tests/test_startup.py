"""Start-up: `layerif --help`, `--version` and a mistyped command answer before torch,
transformers or scipy is imported (each costs seconds), and the parsers of every subcommand
still hold every option."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest

from layerif.cli.commands import COMMANDS
from layerif.cli.main import build_parser, invoked_command

HEAVY = ("torch", "transformers", "scipy", "datasets", "lm_eval", "peft")

PROBE = """
import sys
from layerif.cli.main import main
code = main(sys.argv[1:])
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["nosuch"], [], ["-v", "--help"]])
def test_top_level_answers_import_nothing_heavy(argv):
    probe = PROBE.format(heavy=HEAVY)
    # --help/--version exit through SystemExit inside main, which main turns into a code.
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True,
                         timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    heavy_line = [line for line in out.stdout.splitlines() if line.startswith("HEAVY:")]
    assert heavy_line == ["HEAVY:"], out.stdout + out.stderr


def _median_seconds(cmd: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_help_time_is_a_small_multiple_of_a_bare_interpreter():
    """The figure is a ratio against `python -c pass` in the same run (the machine's speed and
    load cancel). Importing torch alone is ~30x a bare interpreter here, so 12x is generous and
    still fails when --help imports torch again."""
    bare = _median_seconds([sys.executable, "-c", "pass"])
    help_ = _median_seconds([sys.executable, "-m", "layerif", "--help"])
    assert help_ < 12 * bare + 0.05, (help_, bare)


def test_invoked_command_is_the_first_word_after_top_level_options():
    assert invoked_command(["score", "--model", "x"]) == ["score"]
    assert invoked_command(["-v", "prune", "--help"]) == ["prune"]
    assert invoked_command(["--help"]) == []
    assert invoked_command(["nosuch", "score"]) == []
    assert invoked_command([]) == []


def test_every_subcommand_module_builds_its_full_parser():
    """A subcommand's full parser (built only when it is invoked) is the one the listing names,
    with the same help line; nothing is listed that has no module."""
    def command_action(parser):
        return next(a for a in parser._actions if a.dest == "command")

    listed = {c.dest: c.help for c in command_action(build_parser([]))._choices_actions}
    assert list(listed) == list(COMMANDS)
    for name in COMMANDS:
        action = command_action(build_parser([name]))
        assert len(action.choices[name]._actions) > 1 or name == "tasks", name  # beyond --help
        assert {c.dest: c.help for c in action._choices_actions}[name] == listed[name]


PARSER_PROBE = """
import sys
from layerif.cli.main import build_parser
build_parser([sys.argv[1]])
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_subcommands_parser_imports_nothing_heavy(name):
    """Its options, choices and defaults come from light modules, so a mistyped option or a
    bad value is refused before torch is imported."""
    out = subprocess.run([sys.executable, "-c", PARSER_PROBE.format(heavy=HEAVY), name],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stdout
