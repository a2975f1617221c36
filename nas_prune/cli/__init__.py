"""The ``nas-prune`` command line: a thin Typer layer over library functions.

Each command lives in its own module of this package, parses options and calls one
library function with keyword arguments. torch / fvcore / optuna are imported inside
the commands so that ``nas-prune --help`` starts instantly.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="nas-prune",
    help="Compress image-to-image GAN generators: prune to a MACs budget, search, distill.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich markup would eat "[default]" brackets in option help and add <bool> to flags.
    rich_markup_mode=None,
)



def _version(value: bool) -> None:
    if value:
        from nas_prune import __version__

        typer.echo(f"nas-prune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Compress image-to-image GAN generators: prune to a MACs budget, search, distill."""


# Command modules register themselves on `app` when imported.
from nas_prune.cli import profile as _profile  # noqa: E402,F401
from nas_prune.cli import search as _search  # noqa: E402,F401
from nas_prune.cli import distill as _distill  # noqa: E402,F401
from nas_prune.cli import run as _run  # noqa: E402,F401
from nas_prune.cli import evaluate as _evaluate  # noqa: E402,F401
from nas_prune.cli import export as _export  # noqa: E402,F401
from nas_prune.cli import train_teacher as _train_teacher  # noqa: E402,F401


def _plain_usage() -> None:
    """Usage lines as click writes them: ``nas-prune run [OPTIONS] RECIPE``, not ``{recipe}``;
    arguments listed by their name alone (``MODEL...``, not ``MODEL <list[str]>``)."""
    from typer.core import TyperArgument, TyperCommand

    class Argument(TyperArgument):
        def display_type(self, ctx):
            return ""  # the metavar says what it is; a type label adds only noise

        def _rich_display_name(self) -> str:
            name = self.display_name_raw
            return f"{name}..." if self.nargs != 1 and not name.endswith("...") else name

    class Command(TyperCommand):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for param in self.params:
                if type(param) is TyperArgument:
                    param.__class__ = Argument

        def collect_usage_pieces(self, ctx):
            pieces = super().collect_usage_pieces(ctx)
            return [p[1:].replace("}", "", 1) if p.startswith("{") else p for p in pieces]

    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command


_plain_usage()


def main() -> None:
    """Console-script entry point.

    stdout and stderr are wrapped so that a reader that went away (``| tee`` killed, a closed
    terminal) mutes the output instead of failing the command (:mod:`nas_prune.pipes`).
    """
    import sys

    from nas_prune.pipes import SafeStream

    sys.stdout, sys.stderr = SafeStream(sys.stdout), SafeStream(sys.stderr)
    app()
