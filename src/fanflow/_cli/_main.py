"""The ``fanflow`` command group."""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from .ask import ask
from .map import map_command
from .mcp import mcp
from .simulate import simulate
from .workflow import report, run, schema, validate


class _Group(click.Group):
    """The command group: Ctrl-C anywhere exits 130 without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # Outside a run (loading, validating, writing reports): nothing
            # to clean up. Runs handle signals themselves (_runner).
            click.echo("fanflow: interrupted (SIGINT)", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fanflow")
def main() -> None:
    """fanflow: fan independent tasks out, fan their results in."""


main.add_command(map_command, name="map")
main.add_command(simulate)
main.add_command(mcp)
for command in (run, validate, schema, report, ask):
    main.add_command(command)
