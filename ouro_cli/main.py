"""The `ouro` command: one Typer app, one module per command group."""

import typer

app = typer.Typer(
    name="ouro",
    help="Run ByteDance's Ouro looped language models on the CPU through llama.cpp's GGUF format.",
    no_args_is_help=True,
    add_completion=False,
)

import ouro_cli.convert_cmd  # noqa: E402,F401  (registers `ouro convert`)
import ouro_cli.chat  # noqa: E402,F401  (registers `ouro chat`)
import ouro_cli.generate  # noqa: E402,F401  (registers `ouro generate`)
import ouro_cli.info  # noqa: E402,F401  (registers `ouro info`)
import ouro_cli.bench  # noqa: E402,F401  (registers `ouro bench`)
import ouro_cli.serve  # noqa: E402,F401  (registers `ouro serve`)
import ouro_cli.models_cmd  # noqa: E402,F401  (registers `ouro list` and `ouro rm`)

from ouro_cli.runtime_cmd import runtime_app  # noqa: E402  (registers `ouro runtime ...`)
import ouro_cli.runtime_phone_cmd  # noqa: E402,F401  (registers `ouro runtime export-source` and `cross-build`)
app.add_typer(runtime_app, name="runtime")
