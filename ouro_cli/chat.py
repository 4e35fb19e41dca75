"""`ouro chat [MODEL]`: a streaming terminal chat with an Ouro GGUF (the embedded model by default).

Input: one line is one message; a line ending in `\\` continues on the next line, and a `\"\"\"` line opens
a block that runs until a line ending in `\"\"\"`. Commands start with `/` (see HELP). Ctrl-C stops the
answer being written and returns to the prompt; Ctrl-D (or /exit) quits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ouro_cli import model_options as opt
from runtime import OuroModel
from runtime.errors import OuroRuntimeError

app = typer.Typer()

HELP = """\
/help              this help
/clear             forget the conversation (the system prompt stays)
/system [TEXT]     show or set the system prompt (/system - removes it)
/loops N           run N loops per token (reloads the model; the conversation stays)
/threshold Q       Q-exit threshold in [0, 1]
/stats             speeds, loops per token and KV memory of the last answer
/save FILE         save the conversation as JSON
/load FILE         load a conversation saved with /save
/exit              quit (or Ctrl-D)
Multi-line input: end a line with \\ to continue it, or wrap the text in \"\"\" lines.
Ctrl-C stops the answer being written."""

PROMPT, CONTINUATION = ">>> ", "... "
BLOCK = '"""'
THINK_TAGS = ("<think>", "</think>")


class StreamPrinter:
    """Prints streamed text, the <think> … </think> part dimmed and set apart from the answer.

    A tag can arrive split over several pieces, so text that could be the start of one is held back.
    """

    def __init__(self, console: Console, thinking: bool) -> None:
        self.console = console
        self.thinking = thinking
        self.pending = ""
        self.after_thinking = False  # drop the whitespace between </think> and the answer
        self.printed = False

    def feed(self, piece: str) -> None:
        self.pending += piece
        while True:
            found = [(self.pending.find(tag), tag) for tag in THINK_TAGS if tag in self.pending]
            if not found:
                break
            at, tag = min(found)
            self._emit(self.pending[:at])
            self.pending = self.pending[at + len(tag):]
            self._switch(thinking=tag == "<think>")
        keep = max((n for tag in THINK_TAGS for n in range(1, len(tag)) if self.pending.endswith(tag[:n])),
                   default=0)
        self._emit(self.pending[:len(self.pending) - keep])
        self.pending = self.pending[len(self.pending) - keep:]

    def finish(self) -> None:
        self._emit(self.pending)
        self.pending = ""
        if self.printed:
            self.console.print()

    def _switch(self, thinking: bool) -> None:
        if self.thinking and not thinking and self.printed:
            self.console.print("\n")
        self.thinking = thinking
        self.after_thinking = not thinking

    def _emit(self, text: str) -> None:
        if self.after_thinking:
            text = text.lstrip()
            self.after_thinking = not text
        if text:
            self.console.print(text, style="dim" if self.thinking else None, end="", markup=False,
                               highlight=False, emoji=False, soft_wrap=True)
            self.printed = True


@dataclass
class Conversation:
    system: str | None
    messages: list[dict[str, str]] = field(default_factory=list)

    def as_messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    def save(self, path: Path) -> None:
        data = json.dumps({"system": self.system, "messages": self.messages}, indent=2, ensure_ascii=False)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(data + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OuroRuntimeError(f"cannot save to {path}: {e.strerror}") from None

    @classmethod
    def load(cls, path: Path) -> Conversation:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise OuroRuntimeError(f"cannot read {path}: {e.strerror}") from None
        except ValueError as e:
            raise OuroRuntimeError(f"{path} is not JSON: {e}") from None
        messages = data.get("messages") if isinstance(data, dict) else None
        system = data.get("system") if isinstance(data, dict) else None
        valid = isinstance(messages, list) and all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in messages)
        if not valid or not (system is None or isinstance(system, str)):
            raise OuroRuntimeError(f"{path} is not a conversation saved by /save")
        return cls(system, [{"role": m["role"], "content": m["content"]} for m in messages])


class ChatSession:
    def __init__(self, model: OuroModel, console: Console, conversation: Conversation,
                 sampling: dict[str, Any], enable_thinking: bool | None) -> None:
        self.model = model
        self.console = console
        self.conversation = conversation
        self.sampling = sampling
        self.enable_thinking = enable_thinking

    # -- one turn -----------------------------------------------------------------------------------

    def answer(self, text: str) -> None:
        self.conversation.messages.append({"role": "user", "content": text})
        try:
            stream = self.model.chat(self.conversation.as_messages(), stream=True,
                                     enable_thinking=self.enable_thinking, **self.sampling)
        except OuroRuntimeError as e:
            self.conversation.messages.pop()
            self.error(str(e))
            return
        printer = StreamPrinter(self.console, thinking=stream.opened_thinking)
        with opt.CtrlC() as ctrl_c:
            try:
                for piece in stream:
                    printer.feed(piece)
                    if ctrl_c.pressed:
                        break
            except KeyboardInterrupt:
                pass
            stream.close()  # ends the generation if it is still running (a no-op once it has finished)
        printer.finish()
        completion = stream.completion
        assert completion is not None
        # An interrupted answer stays in the conversation: it is what the model said, and in its KV cache.
        self.conversation.messages.append(completion.message)
        stats = completion.stats
        if stats.finish_reason == "interrupted":
            self.console.print("[dim]\\[interrupted][/dim]")
        elif stats.finish_reason == "length" and stats.generated_tokens != self.sampling.get("max_tokens"):
            self.console.print("[dim]\\[context full: /clear, or restart with a larger --ctx][/dim]")
        self.console.print(f"[dim]{stats.generated_tokens} tokens · {opt.rate(stats.decode_tps)} · prefill "
                           f"{stats.prefill_tokens} of {stats.prompt_tokens} tokens at {opt.rate(stats.prefill_tps)}"
                           f" · loops/token {opt.loops_text(stats.mean_loops)}[/dim]")

    # -- commands -----------------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a /command; False when the chat should end."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        handler = {
            "/help": lambda: self.console.print(HELP, markup=False, highlight=False),
            "/clear": self.clear, "/system": lambda: self.system(arg), "/loops": lambda: self.loops(arg),
            "/threshold": lambda: self.threshold(arg), "/stats": self.stats,
            "/save": lambda: self.save(arg), "/load": lambda: self.load(arg),
        }.get(name)
        if name in ("/exit", "/quit", "/bye"):
            return False
        if handler is None:
            self.error(f"unknown command {name}; /help lists them")
            return True
        try:
            handler()
        except OuroRuntimeError as e:
            self.error(str(e))
        return True

    def clear(self) -> None:
        self.conversation.messages.clear()
        self.model.reset()
        self.note("conversation cleared")

    def system(self, text: str) -> None:
        if not text:
            self.note(f"system prompt: {self.conversation.system or '(none)'}")
            return
        self.conversation.system = None if text == "-" else text
        self.note("system prompt set" if self.conversation.system else "system prompt removed")

    def loops(self, arg: str) -> None:
        self.model.set_loops(_number(arg, int, "/loops N"))
        self.note(f"loops: {self.model.loops} · {opt.kv_summary(self.model)}")

    def threshold(self, arg: str) -> None:
        self.model.set_exit_threshold(_number(arg, float, "/threshold Q"))
        self.note(f"exit threshold: {self.model.exit_threshold} ({self.model.exit_mode} mode)")

    def stats(self) -> None:
        m, s = self.model, self.model.stats
        lines = [f"loops {m.loops} (file: {m.file_loops}) · exit threshold {m.exit_threshold} · "
                 f"exit mode {m.exit_mode} · kv {m.kv}",
                 f"KV in use {opt.human_bytes(m.kv_bytes_in_use)} of {opt.human_bytes(m.kv_bytes_capacity)} "
                 f"({m.llama.n_tokens} of {m.n_ctx} tokens)"]
        if s is None:
            lines.append("no answer yet")
        else:
            lines += [f"prompt: {s.prompt_tokens} tokens, {s.prefill_tokens} evaluated "
                      f"({s.prompt_tokens - s.prefill_tokens} from the KV cache) at {opt.rate(s.prefill_tps)}",
                      f"generation: {s.generated_tokens} tokens at {opt.rate(s.decode_tps)} ({s.finish_reason})",
                      f"mean loops per token: {opt.loops_text(s.mean_loops)}"]
        self.console.print("\n".join(lines), markup=False, highlight=False)

    def save(self, arg: str) -> None:
        if not arg:
            raise OuroRuntimeError("usage: /save FILE")
        path = Path(arg).expanduser()
        self.conversation.save(path)
        self.note(f"saved {len(self.conversation.messages)} messages to {path}")

    def load(self, arg: str) -> None:
        if not arg:
            raise OuroRuntimeError("usage: /load FILE")
        self.conversation = Conversation.load(Path(arg).expanduser())
        self.note(f"loaded {len(self.conversation.messages)} messages")

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/dim]")

    def error(self, text: str) -> None:
        self.console.print(f"[bold red]error:[/bold red] {escape(text)}")


def _number(arg: str, kind: type, usage: str) -> Any:
    try:
        return kind(arg)
    except ValueError:
        raise OuroRuntimeError(f"usage: {usage}") from None


def read_message() -> str:
    """One message from the user (raises EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C)."""
    line = input(PROMPT)
    if line.strip().startswith(BLOCK):
        body = line.strip()[len(BLOCK):]
        lines = []
        while not body.rstrip().endswith(BLOCK):
            lines.append(body)
            body = input(CONTINUATION)
        lines.append(body.rstrip()[:-len(BLOCK)])
        return "\n".join(lines).strip("\n")
    while line.endswith("\\"):
        line = line[:-1] + "\n" + input(CONTINUATION)
    return line


def run_chat(session: ChatSession) -> None:
    console = session.console
    while True:
        try:
            text = read_message()
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:
            console.print("\n[dim](Ctrl-D or /exit quits)[/dim]")
            continue
        if not text.strip():
            continue
        if text.startswith("/"):
            if not session.command(text.strip()):
                return
            continue
        session.answer(text)


@app.command("chat")
def chat(
    model: Annotated[Optional[str], typer.Argument(help=opt.MODEL_HELP + " Without one, the embedded model.")] = None,
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")] = None,
    think: Annotated[Optional[bool], typer.Option("--think/--no-think", help="Thinking models: open the <think> block (default: the template's).")] = None,
    temp: opt.Temp = None, top_p: opt.TopP = None, top_k: opt.TopK = None, min_p: opt.MinP = None,
    repeat_penalty: opt.RepeatPenalty = None, seed: opt.Seed = None, max_tokens: opt.MaxTokens = None,
    ignore_eos: opt.IgnoreEos = False,
    ctx: opt.Ctx = None, threads: opt.Threads = None, loops: opt.Loops = None,
    exit_threshold: opt.ExitThreshold = None, exit_mode: opt.ExitModeOpt = None,
    kv: opt.KvOpt = None, kv_type: opt.KvTypeOpt = None, mmap: opt.MmapOpt = None, phone: opt.Phone = False,
    yes: opt.Yes = False,
    model_type: opt.ModelType = None,
) -> None:
    """Chat with an Ouro model in the terminal (streaming, multi-turn, /help for commands)."""
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with opt.cli_errors(err):
        params = opt.sampling(temp=temp, top_p=top_p, top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty,
                              seed=seed, max_tokens=max_tokens, ignore_eos=ignore_eos)
        settings = opt.settings(phone=phone, ctx=ctx, threads=threads, loops=loops, exit_threshold=exit_threshold,
                                exit_mode=exit_mode, kv=kv, kv_type=kv_type, mmap=mmap)
        opened = opt.open_model(model, settings, err, yes=yes, type_name=model_type)
        m = opened.model
        m.default_sampling.updated(**params)  # reject bad values now rather than at the first answer
    console.print(f"[bold]ouro chat[/bold] · {escape(opened.label)}")
    if opened.synthetic:
        console.print("[yellow]this is a synthetic model with random weights: its replies are noise[/yellow]")
    console.print(f"[dim]loops {m.loops} · {m.metadata.get('ouro.block_count')} layers · exit threshold "
                  f"{m.exit_threshold} ({m.exit_mode}) · {escape(opt.kv_summary(m))}[/dim]")
    if think is not None and not m.thinking:
        console.print("[dim]--think/--no-think: this model has no thinking mode; ignored[/dim]")
    console.print('[dim]/help for commands · end a line with \\ or use """ for multi-line input · '
                  'Ctrl-C stops an answer · Ctrl-D quits[/dim]')
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    session = ChatSession(m, console, Conversation(system), params, think if m.thinking else None)
    try:
        run_chat(session)
    finally:
        m.close()
