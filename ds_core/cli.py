"""How `python -m ds_core` runs a command: the table's entries, one-line errors, and the options commands share.

The table itself is in ds_core/__main__.py. Each entry names the module that implements a command; that module
has two functions, and is imported only when its command runs or its --help is asked for:

    add_arguments(parser)   the command's options, on an argparse parser
    run(args)               do it, given the parsed options; raise ValueError or OSError for input the user can fix

A Group is a command whose first argument picks one of several (`bench mla`); `bench` alone runs its default.

Every error the user can fix, an argparse syntax error as much as a checkpoint that is not there, prints one line,
`error: ...`, on stderr and exits 2. DS_CORE_TRACEBACK=1 shows the traceback of a run's error instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """`name` as the user types it, the module that implements it (add_arguments, run), and its --help line."""
    name: str
    module: str
    summary: str


@dataclass(frozen=True)
class Group:
    """Commands chosen by the first argument; without one (or with an option first), `default` runs."""
    name: str
    summary: str
    commands: tuple[Command | Group, ...]
    noun: str = "command"          # what a member is called in the help and in errors
    default: str | None = None     # the member that runs when the first argument names none

    def member(self, name: str | None) -> Command | Group | None:
        return next((c for c in self.commands if c.name == name), None)

    def help(self, prog: str) -> str:
        """The listing --help prints: every member with its one-line summary."""
        width = max(len(c.name) for c in self.commands) + 3
        what = self.noun.upper()
        chosen = f"[{what}]" if self.default else what
        lines = [f"usage: {prog} {chosen} [options]", "", self.summary, "", f"{self.noun}s:"]
        for c in self.commands:
            default = "(the default) " if c.name == self.default else ""
            lines.append(f"  {c.name:<{width}}{default}{c.summary}")
        lines += ["", f"{prog} {what} --help lists the options of one."]
        return "\n".join(lines)

    def resolve(self, argv: list[str], prog: str) -> Invocation:
        """argv -> the command it names, with the arguments left for it. Raises ShowHelp for --help and UsageError
        for a name that is no member."""
        first = argv[0] if argv else None
        chosen = self.member(first)
        if chosen is not None:
            argv = argv[1:]
        elif first in ("-h", "--help"):
            raise ShowHelp(self.help(prog))
        elif self.default is not None and (first is None or first.startswith("-")):
            chosen = self.member(self.default)
        else:
            names = ", ".join(c.name for c in self.commands)
            problem = f"unknown {self.noun} {first!r}" if first is not None else f"no {self.noun} given"
            raise UsageError(f"{problem}: choose one of {names} (see {prog} --help)")
        prog = f"{prog} {chosen.name}"
        if isinstance(chosen, Group):
            return chosen.resolve(argv, prog)
        return Invocation(chosen, argv, prog, self.noun)


@dataclass
class Invocation:
    """A command as the user invoked it: the arguments left for it, and how its usage line names it."""
    command: Command
    argv: list[str]
    prog: str    # 'python -m ds_core bench mla'
    noun: str    # what its group calls it: 'command', 'benchmark'

    def load(self) -> ModuleType:
        try:
            return importlib.import_module(self.command.module)
        except ImportError as e:  # a dependency this build lacks: say which, in one line
            raise ValueError(f"the {self.command.name} {self.noun} is not available in this build ({e})") from e


class UsageError(Exception):
    """Arguments that do not parse; main() prints the message as one line and exits 2."""


class ShowHelp(Exception):
    """A group's --help: main() prints the listing and exits 0."""


class CommandParser(argparse.ArgumentParser):
    """argparse, but a syntax error raises UsageError (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---- options several commands share -----------------------------------------------------------------------
def add_mla_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mla", choices=("naive", "absorbed"), default=None,
                        help="MLA implementation and KV cache kind (default: absorbed, the latent cache)")


def _device(name: str) -> str:
    import torch

    if name not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("this torch build sees no CUDA device; use --device cpu")
    return name


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device cpu|cuda; cuda is refused while parsing where torch sees no CUDA device."""
    parser.add_argument("--device", type=_device, default="cpu", metavar="{cpu,cuda}", help="(default cpu)")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")


def add_config_arguments(parser: argparse.ArgumentParser, config: type) -> None:
    """One option per field of the dataclass `config`: --field-name of the default's type, --[no-]flag for a bool."""
    for f in dataclasses.fields(config):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=f"(default {f.default})")


def config_from_args(config: type, args: argparse.Namespace):
    """The dataclass `config` built from the options add_config_arguments added (other options are ignored)."""
    return config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config)})


# ---- entry ------------------------------------------------------------------------------------------------
def main(root: Group, argv: list[str] | None = None) -> int:
    """Parse argv against root's table, run the command -> exit code (0, or 2 for bad input, 130 if interrupted)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        invoked = root.resolve(argv, root.name)
        module = invoked.load()
        parser = CommandParser(prog=invoked.prog, description=invoked.command.summary)
        module.add_arguments(parser)
        try:
            args = parser.parse_args(invoked.argv)
        except SystemExit as e:  # --help: argparse printed it and exits 0
            return e.code or 0
        module.run(args)
        return 0
    except ShowHelp as h:
        print(h.args[0])
        return 0
    except UsageError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # keep the interpreter's last flush quiet
        return 0
    # CheckpointError and ConfigError are ValueErrors; so are bad settings. Their messages say what to fix.
    except (ValueError, OSError) as e:
        if os.environ.get("DS_CORE_TRACEBACK"):  # for debugging ds_core itself: show where it came from
            raise
        return _error(str(e))


def _error(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"error: {line}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT
