"""The `ouro` command: each command module owns its Typer app; this one composes them."""

import typer

from ouro_cli import bench, chat, convert_cmd, generate, info, models_cmd, runtime_cmd, serve

app = typer.Typer(
    name="ouro",
    help="Run ByteDance's Ouro looped language models on the CPU through llama.cpp's GGUF format.",
    no_args_is_help=True,
    add_completion=False,
)
for command in (convert_cmd, chat, generate, info, bench, serve, models_cmd):
    app.add_typer(command.app)
app.add_typer(runtime_cmd.app, name="runtime")
