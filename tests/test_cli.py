"""The command line is consistent: one flag per meaning, help on every flag, old flags as warned aliases."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every leaf command ('sweep', 'run') -> its parser."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_commands(sub, prefix + (name,)))
    if not out and prefix:
        out[prefix] = parser
    return out


COMMANDS = _commands(build_parser())


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_every_argument_has_help(command):
    parser = COMMANDS[command]
    missing = [a.option_strings or a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing, f"vpr {' '.join(command)}: arguments without help: {missing}"


def test_one_flag_per_meaning():
    # Parallel runs, trials or processes: --jobs, wherever there is parallelism.
    for command in [("sweep", "run"), ("sweep", "evaluate"), ("tune", "run"), ("report",)]:
        assert "--jobs" in _flags(COMMANDS[command]), command
    # The old names exist only as deprecated aliases.
    for command, parser in COMMANDS.items():
        for action in parser._actions:
            if set(action.option_strings) & {"--workers", "--num-workers", "--storage", "--experiments", "--tuned"}:
                assert action.help.startswith("deprecated alias"), (command, action.option_strings)
    # Tuned values, the tunings' storage and the study files are named one way everywhere.
    for command in [("sweep", "plan"), ("sweep", "run"), ("sweep", "evaluate"), ("tune", "run"), ("config", "show"),
                    ("report",)]:
        assert "--tuned-dir" in _flags(COMMANDS[command]), command
    for command in [("tune", "run"), ("tune", "dashboard"), ("report",)]:
        assert {"--tuning-storage", "--journal-dir"} <= _flags(COMMANDS[command]), command
    for command in [("sweep", "plan"), ("sweep", "run"), ("sweep", "evaluate"), ("tune", "run"), ("report",)]:
        positional = [a.dest for a in COMMANDS[command]._actions if not a.option_strings and a.dest != "help"]
        assert positional == ["studies"], command


@pytest.mark.parametrize("command", [("sweep", "run"), ("sweep", "evaluate"), ("tune", "run"), ("report",), ("train",),
                                     ("evaluate",), ("prepare",), ("data", "synth"), ("data", "check")], ids=" ".join)
def test_long_output_can_be_quieted(command):
    assert "--quiet" in _flags(COMMANDS[command])


@pytest.mark.parametrize(("argv", "dest", "value", "new"), [
    (["tune", "run", "--workers", "3"], "jobs", 3, "--jobs"),
    (["tune", "run", "--storage", "sqlite:///x.db"], "tuning_storage", "sqlite:///x.db", "--tuning-storage"),
    (["tune", "run", "--out", "tuned"], "tuned_dir", "tuned", "--tuned-dir"),
    (["evaluate", "--checkpoint", "c.pt", "--dataset", "d", "--num-workers", "2"], "loader_workers", 2,
     "--loader-workers"),
    (["config", "show", "s", "l", "--tuned", "tuned"], "tuned_dir", "tuned", "--tuned-dir"),
])
def test_an_old_flag_still_works_and_names_its_replacement(argv, dest, value, new, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert f"{argv[-2]} is deprecated" in err and f"use {new}" in err


def test_a_bad_count_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["tune", "run", "--jobs", "0"])
    assert exit_info.value.code == 2
    assert "argument --jobs: must be >= 1, got 0" in capsys.readouterr().err
