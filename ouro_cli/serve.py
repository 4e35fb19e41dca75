"""`ouro serve [MODEL]`: an OpenAI-compatible HTTP server on 127.0.0.1 (runtime/server.py).

Requests are served one at a time on the one model (concurrent clients queue); loops, the exit threshold
and the exit mode default to the flags and can be changed per request with the extra fields "loops",
"exit_threshold" and "exit_mode". 
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ouro_cli import model_options as opt
from runtime.errors import OuroRuntimeError
from runtime.server import DEFAULT_HOST, OuroServer

app = typer.Typer()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command("serve")
def serve(
    model: Annotated[Optional[str], typer.Argument(help=opt.MODEL_HELP + " Default: the embedded model.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind. Anything but loopback exposes the model, unauthenticated, to the network.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port).")] = 8080,
    log: Annotated[bool, typer.Option("--log/--quiet", help="Print one line per request.")] = True,
    ctx: opt.Ctx = None, threads: opt.Threads = None, loops: opt.Loops = None,
    exit_threshold: opt.ExitThreshold = None, exit_mode: opt.ExitModeOpt = None,
    kv: opt.KvOpt = None, kv_type: opt.KvTypeOpt = None, mmap: opt.MmapOpt = None, phone: opt.Phone = False,
    yes: opt.Yes = False,
    model_type: opt.ModelType = None,
) -> None:
    """Serve an Ouro model over an OpenAI-compatible HTTP API (chat, completions, streaming)."""
    err = Console(stderr=True, highlight=False)
    with opt.cli_errors(err):
        settings = opt.settings(phone=phone, ctx=ctx, threads=threads, loops=loops, exit_threshold=exit_threshold,
                                exit_mode=exit_mode, kv=kv, kv_type=kv_type, mmap=mmap)
        opened = opt.open_model(model, settings, err, yes=yes, type_name=model_type)
        model_id = opened.model.path.stem
        try:
            server = OuroServer(opened.model, model_id, host, port,
                                log=(lambda line: err.print(f"[dim]{escape(line)}[/dim]")) if log else None)
        except OSError as e:
            opened.model.close()
            raise OuroRuntimeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound_host, bound_port = server.address
    err.print(f"serving [bold]{escape(opened.label)}[/bold] as model [bold]{escape(model_id)}[/bold] on "
              f"http://{bound_host}:{bound_port}/v1 (OpenAI-compatible) · loops {opened.model.loops} · "
              f"exit {opened.model.exit_mode} at threshold {opened.model.exit_threshold:g} · Ctrl-C stops")
    err.print(f"[dim]{opt.kv_summary(opened.model)}[/dim]")
    if not _is_loopback(bound_host):
        err.print(f"[bold yellow]warning:[/bold yellow] listening on {bound_host}: anyone who can reach this "
                  "machine can use the model (there is no authentication)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        server.httpd.server_close()
        opened.model.close()
