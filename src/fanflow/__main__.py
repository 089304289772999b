"""``python -m fanflow``: the command line."""

from fanflow._cli import main

main()
