"""`fieldpress COMMAND ...` and `python -m fieldpress COMMAND ...`: dispatch through the
`fieldpress.commands` entry-point registry, which every family adds its commands to."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from fieldpress.cli import run_command


def commands() -> dict[str, Callable[[Sequence[str] | None], int | None]]:
    """Every registered command, by name (loaded lazily)."""
    return {ep.name: ep for ep in entry_points(group="fieldpress.commands")}  # type: ignore[misc]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    registry = commands()
    if not args or args[0] in ("-h", "--help"):
        names = "\n  ".join(sorted(registry))
        print(f"usage: fieldpress COMMAND [ARGS...]\n\ncommands:\n  {names}\n\n"
              "Run `fieldpress COMMAND --help` for a command's flags.")
        sys.exit(0 if args else 2)
    if args[0] in ("-V", "--version"):
        from fieldpress import __version__

        print(__version__)
        sys.exit(0)
    name, rest = args[0], args[1:]
    if name not in registry:
        print(f"error: unknown command {name!r}; commands: {', '.join(sorted(registry))}", file=sys.stderr)
        sys.exit(2)
    body = registry[name].load()  # type: ignore[attr-defined]
    sys.exit(run_command(body, rest))


if __name__ == "__main__":
    main()
