"""`python -m ouro_cli`: the same app as the `ouro` command (main composes every command)."""

from ouro_cli.main import app

app()
