"""``fanflow mcp``: serve fanflow's tools to an agent over the Model Context Protocol."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--allow-shell",
    is_flag=True,
    help="Let run_workflow run workflows with shell (run:) tasks; refused without it.",
)
def mcp(allow_shell: bool) -> None:
    """Serve fan_out_prompts and run_workflow as MCP tools over stdio.

    For an agent (Claude Desktop, an IDE, any MCP client): configure it to
    start `fanflow mcp`. Stdout carries protocol messages only; logs go to
    stderr. API keys come from the environment. Needs the mcp extra:
    pip install 'fanflow[mcp]'.
    """
    import asyncio

    try:
        import mcp as _sdk  # noqa: F401  # the SDK is imported only here, not by the CLI
    except ImportError:
        raise click.ClickException(
            "fanflow mcp needs the MCP SDK: pip install 'fanflow[mcp]'"
        ) from None
    from .._mcp import serve

    asyncio.run(serve(allow_shell=allow_shell))
