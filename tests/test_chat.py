"""`ouro chat` (issue 6): through Typer's test runner, and a real terminal session on a pty."""

from __future__ import annotations

import codecs
import io
import json
import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ouro_cli.chat import Conversation, StreamPrinter
from ouro_cli.main import app
from runtime.errors import OuroRuntimeError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
FIXED = ["-t", "1", "--ignore-eos", "--seed", "5", "-n", "10", "-c", "512"]
PREFILL = re.compile(r"prompt: (\d+) tokens, (\d+) evaluated")


@pytest.fixture(scope="module")
def gguf(tiny_gguf):
    return str(tiny_gguf(qtype="f16")[1])


def chat(*args: str, input: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["chat", *args], input=input, env=env)


# ------------------------------------------------------------------------------------- test runner

def test_turns_stats_and_loops_command(gguf):
    result = chat(gguf, *FIXED, input="hello\n/stats\nhow are you\n/stats\n/loops 2\nthird\n/stats\n/exit\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "KV cache 1.0 MiB (2.0 KiB/token" in out  # 512 tokens × 2 layers × 4 loops × 4 heads × 16 × K+V × F16
    (p1, e1), (p2, e2), (p3, e3) = [tuple(map(int, m)) for m in PREFILL.findall(out)]
    assert p1 == e1  # the first turn evaluates everything
    assert p2 > e2 > 0  # the second only what the first did not leave in the KV cache
    assert p3 == e3 > p2  # /loops reloaded the model: a new, empty KV cache
    assert out.count("mean loops per token: 4.00") == 2
    assert "loops: 2" in out and "loops 2 (file: 4)" in out and "mean loops per token: 2.00" in out
    assert out.count("10 tokens · ") == 3  # one dim stats line per answer


def test_clear_save_load_and_system(gguf, tmp_path):
    saved = tmp_path / "conv.json"
    script = (f"first\n/save {saved}\n/clear\n/stats\n/system be brief\n/system\n/load {saved}\n"
              f"/load {tmp_path / 'missing.json'}\n/bogus\n/loops many\nsecond\n/save {saved}\n")
    result = chat(gguf, *FIXED, "--system", "sys one", input=script)
    assert result.exit_code == 0, result.output  # stdin's end is Ctrl-D
    out = result.stdout
    assert "saved 2 messages" in out and "conversation cleared" in out and "KV in use 0 B" in out
    assert "system prompt: be brief" in out and "loaded 2 messages" in out
    assert "cannot read" in out and "unknown command /bogus" in out and "usage: /loops N" in out
    data = json.loads(saved.read_text())
    assert data["system"] == "sys one"  # /load brought back the saved system prompt
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in data["messages"][::2]] == ["first", "second"]


def test_multi_line_input(gguf, tmp_path):
    saved = tmp_path / "lines.json"
    script = f'one \\\ntwo\n"""\nthree\n\nfour\n"""\n"""five\nsix"""\n/save {saved}\n'
    result = chat(gguf, *FIXED, input=script)
    assert result.exit_code == 0, result.output
    users = [m["content"] for m in json.loads(saved.read_text())["messages"] if m["role"] == "user"]
    assert users == ["one \ntwo", "three\n\nfour", "five\nsix"]


def test_a_full_context_is_reported_and_the_chat_goes_on(gguf):
    result = chat(gguf, "-t", "1", "--ignore-eos", "-c", "48", input="hello\n" + "word " * 60 + "\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "context full" in result.stdout
    assert "context holds 48" in result.stdout  # the too-long message is refused, the chat continues


def test_bad_model_or_flags_exit_1_without_traceback(gguf, tmp_path):
    for args, message in [([str(tmp_path / "none.gguf")], "no such file"),
                          ([gguf, "--loops", "0"], "loops must be"),
                          ([gguf, "--top-p", "2"], "top_p must be")]:
        result = chat(*args, "-t", "1", input="")
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert "Traceback" not in result.output


def test_embedded_model_is_converted_once_into_the_cache(tmp_path):
    env = {"OURO_CACHE": str(tmp_path)}
    first = chat("-t", "1", input="/exit\n", env=env)
    assert first.exit_code == 0, first.output
    assert "converting the embedded model" in first.stderr
    ggufs = list((tmp_path / "models").glob("*.gguf"))
    assert len(ggufs) == 1 and ggufs[0].name in first.stderr
    second = chat("-t", "1", input="/exit\n", env=env)
    assert second.exit_code == 0 and "converting" not in second.stderr
    assert list((tmp_path / "models").glob("*.gguf")) == ggufs


# ----------------------------------------------------------------------------------- the pieces

def _printed(pieces: list[str], thinking: bool) -> str:
    buffer = io.StringIO()
    printer = StreamPrinter(Console(file=buffer, force_terminal=True, color_system="standard"), thinking)
    for piece in pieces:
        printer.feed(piece)
    printer.finish()
    return buffer.getvalue()


def test_thinking_is_dimmed_and_set_apart_even_when_tags_are_split():
    out = _printed(["<thi", "nk>let me ", "see</th", "ink>\n\n", "It is 4."], thinking=False)
    assert "<think>" not in out and "</think>" not in out
    assert re.search(r"\x1b\[2mlet me \x1b\[0m\x1b\[2msee\x1b\[0m\n\n+It is 4\.", out), repr(out)
    opened = _printed(["pondering</think>", "answer"], thinking=True)  # the template opened the block
    assert re.search(r"\x1b\[2mpondering\x1b\[0m\n\n+answer", opened), repr(opened)
    assert _printed(["a < b and <b>bold</b>"], thinking=False) == "a < b and <b>bold</b>\n"


def test_conversation_files_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"messages": [{"role": "tool", "content": 1}]}))
    with pytest.raises(OuroRuntimeError, match="not a conversation"):
        Conversation.load(bad)
    good = Conversation("s", [{"role": "user", "content": "hi"}])
    good.save(tmp_path / "good.json")
    assert Conversation.load(tmp_path / "good.json") == good
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------- a real terminal

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
STATS_LINE = re.compile(r"\d+ tokens · .*?loops/token (\S+)")
PROMPT = re.compile(r">>> $")


class Terminal:
    """`ouro chat` on a pseudo-terminal: Ctrl-C and Ctrl-D go through the terminal's line discipline.

    `expect` reads on from where the previous match ended; `line` waits for the input prompt first, since
    input typed before readline takes the terminal can be lost."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-c", "from ouro_cli.main import app; app(prog_name='ouro')",
                                       "chat", *args], env)
        self.text = ""      # everything read so far, ANSI codes removed
        self.pos = 0        # where the next expect starts looking
        self.reads = 0      # how many reads brought output
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def line(self, text: str) -> None:
        self.expect(PROMPT)
        self.send(text + "\r")

    def expect(self, pattern: str | re.Pattern, timeout: float = 60.0) -> re.Match:
        """Read until `pattern` matches the output after the last match; fail after `timeout` seconds."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while not (match := regex.search(self.text, self.pos)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {regex.pattern!r}; output:\n{self.text[-3000:]}")
            if select.select([self.fd], [], [], min(left, 0.5))[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"chat ended while waiting for {regex.pattern!r}:\n{self.text[-3000:]}")
                self.reads += 1
                self.text += ANSI.sub("", self._decoder.decode(data))
        self.pos = match.end()
        return match

    def turn(self, message: str) -> re.Match:
        """Send a message; the match of the stats line that ends its answer."""
        self.line(message)
        return self.expect(STATS_LINE)

    def wait_exit(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    os.read(self.fd, 65536)
                except OSError:
                    pass
        raise AssertionError("ouro chat did not exit")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def test_terminal_session_on_the_embedded_model(tmp_path):
    env = {**os.environ, "OURO_CACHE": str(tmp_path), "TERM": "xterm", "COLUMNS": "200", "LINES": "50"}
    # Every answer runs 300 tokens (--ignore-eos): long enough to see it stream and to interrupt it.
    term = Terminal(["-t", "1", "--seed", "0", "--ignore-eos", "-n", "300"], env)
    try:
        term.expect(r"ouro chat · ")
        header = term.expect(r"loops (\d+) · \d+ layers · exit threshold ([\d.]+)")
        term.expect(r"KV cache [\d.]+ [KMG]iB")

        # Every token reads its last loop at threshold 1; below, each exits at its own (not measured yet).
        def mean_loops(loops: int) -> str:
            return f"{loops}.00" if float(header.group(2)) >= 1 else "not"

        term.line("hello there")
        reads_before = term.reads
        term.expect(r"hello there\n.")  # the echo, then the answer's first text
        assert term.expect(STATS_LINE).group(1) == mean_loops(int(header.group(1)))
        # streamed: the answer arrived over many reads before its stats line, not in one block at the end
        assert term.reads - reads_before >= 3

        term.turn("and a second turn")
        term.line("/stats")
        prompt, evaluated = map(int, term.expect(PREFILL).groups())
        assert 0 < evaluated < prompt  # the second turn reused the first one's KV cache
        term.expect(r"generation: 300 tokens")

        term.line("/loops 2")
        term.expect(r"loops: 2 ·")
        assert term.turn("third turn at two loops").group(1) == mean_loops(2)
        term.line("/stats")
        term.expect(r"loops 2 \(file: \d+\)")
        term.expect(r"mean loops per token: " + mean_loops(2))

        term.line("/clear")
        term.expect("conversation cleared")
        term.line("/stats")
        term.expect(r"KV in use 0 B")

        # Ctrl-C in the middle of an answer: back at the prompt, the chat still running.
        term.line("tell me a long story")
        term.expect(r"long story\n.")  # the echo, then the first streamed text
        term.send("\x03")
        term.expect(r"\[interrupted\]")
        term.expect(STATS_LINE)
        term.line("/stats")
        term.expect(r"generation: \d+ tokens at .*\(interrupted\)")

        term.turn("still there?")
        term.expect(PROMPT)
        term.send("\x04")  # Ctrl-D at the prompt quits
        assert term.wait_exit() == 0
    finally:
        term.kill()
