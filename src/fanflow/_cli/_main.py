"""The ``fanflow`` command group."""

from __future__ import annotations

import click

from .. import __version__
from .ask import ask
from .map import map_command
from .simulate import simulate
from .workflow import report, run, schema, validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fanflow")
def main() -> None:
    """fanflow: fan independent tasks out, fan their results in."""


main.add_command(map_command, name="map")
main.add_command(simulate)
for command in (run, validate, schema, report, ask):
    main.add_command(command)
