"""Run one block of an All-Pairs matrix.

This file is shipped to workers as it is, so it uses the standard library only
and runs on Python 3.8 or later. The local pool imports it; a worker runs it as

    python3 runner.py BLOCK.json OUT.tsv

where BLOCK.json names F, the block's items and their global indices. The
output is one ``i<TAB>j<TAB>result`` line per pair, results escaped so each
pair is one line. The first failing pair ends the run with exit status 1 and a
JSON line on stdout naming the pair, F's status and the tail of its stderr.

An executable F whose first line is exactly ``#!/bin/sh`` (no option after the
interpreter) runs in a reused shell: each strip (thread) starts one ``/bin/sh``
on its first pair and runs the script in a subshell ``( . SCRIPT )`` per pair,
which saves starting ``/bin/sh`` anew for every pair (about a millisecond on a
small VM). The subshell sees what a fresh exec would: ``$0`` is the script's
path, ``"$@"`` the arguments, stdin is /dev/null, and ``cd``, variables, traps
and ``set -e`` end with it. Two differences cannot be avoided: ``$$`` is the
reused shell's pid, the same for every pair, and a script killed by signal N
reports exit status 128+N. ``Function(exec_each=True)`` (``--exec-each``) starts
F afresh for every pair instead.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import importlib
import importlib.util
import io
import json
import os
import shlex
import sys
import tempfile
import threading
import time
import types
import weakref

BITWISE = "BITWISE"

# How much of a failing F's stderr is kept for the error message (the last 2 KiB).
STDERR_TAIL = 2048


def batched(function):
    """Mark a callable as batched: called as F(items_a, items_b), returns a matrix."""
    function.treadle_batched = True
    return function


def takes_bytes(function):
    """Mark a callable as taking the items' contents (bytes) instead of their paths."""
    function.treadle_takes_bytes = True
    return function


class PairFailure(Exception):
    """F failed on one pair; ``i`` and ``j`` are global indices (-1 when unknown)."""

    def __init__(self, i: int, j: int, message: str, stderr: str = ""):
        super().__init__(message)
        self.i = i
        self.j = j
        self.message = message
        self.stderr = stderr

    def to_json(self) -> str:
        return json.dumps(
            {"failed": [self.i, self.j], "message": self.message, "stderr": self.stderr}
        )


def escape(text: str) -> str:
    """Make a result one line: backslash, newline and carriage return are escaped."""
    if "\\" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return text


def result_text(value) -> str:
    """The text of a callable's return value (docs/allpairs.md, "Output formats"), not yet escaped."""
    kind = type(value)
    if kind is int or kind is str:
        return str(value)
    if kind is bool:
        return "1" if value else "0"
    if kind is float:
        return repr(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(float(value))
    if hasattr(value, "item") and hasattr(value, "dtype"):
        return result_text(value.item())
    return str(value)


def bitwise(a: bytes, b: bytes) -> int:
    """Differing byte positions below min(len a, len b), plus the length difference.

    XOR of the two prefixes as big integers has a zero byte exactly where the
    inputs agree; counting zero bytes runs at C speed.
    """
    n = min(len(a), len(b))
    extra = abs(len(a) - len(b))
    if n == 0:
        return extra
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - x.to_bytes(n, "big").count(0) + extra


def _bitwise_rows(rows_bytes, cols_bytes):
    """BITWISE over a block of loaded items, using numpy when it is importable."""
    try:
        if len(rows_bytes) * len(cols_bytes) < 64:
            raise ImportError("small blocks are faster without numpy")
        import numpy
    except ImportError:
        return [[bitwise(a, b) for b in cols_bytes] for a in rows_bytes]
    by_length: dict[int, list[int]] = {}
    for col, b in enumerate(cols_bytes):
        by_length.setdefault(len(b), []).append(col)
    groups: list[tuple[int, list[int], numpy.ndarray | None]] = []
    for length, cols in by_length.items():
        if length == 0:
            groups.append((length, cols, None))
            continue
        stacked = numpy.frombuffer(b"".join(cols_bytes[c] for c in cols), dtype=numpy.uint8)
        groups.append((length, cols, stacked.reshape(len(cols), length)))
    table = []
    for a in rows_bytes:
        row = [0] * len(cols_bytes)
        va = numpy.frombuffer(a, dtype=numpy.uint8)
        for length, cols, matrix in groups:
            n = min(len(a), length)
            extra = abs(len(a) - length)
            if matrix is None or n == 0:  # no column bytes, or no row bytes, to compare
                counts = [extra] * len(cols)
            else:
                counts = (numpy.count_nonzero(matrix[:, :n] != va[:n], axis=1) + extra).tolist()
            for c, value in zip(cols, counts):  # noqa: B905 (runs on Python 3.8)
                row[c] = value
        table.append(row)
    return table


def _rewind(fd: int) -> None:
    """Empty a scratch file and put its offset back at 0, keeping its inode."""
    if os.fstat(fd).st_size:
        os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)


def _stderr_tail(fd: int) -> str:
    size = os.fstat(fd).st_size
    return os.pread(fd, STDERR_TAIL, max(0, size - STDERR_TAIL)).decode("utf-8", "replace")


def _exit_code(status: int) -> int:
    """A wait status as an exit status, or -N for death by signal N."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)


def is_plain_sh_script(path: str) -> bool:
    """Whether F is an executable file whose first line is ``#!/bin/sh`` and nothing more.

    Blanks around the interpreter are allowed (the kernel skips them); an option
    such as ``#!/bin/sh -e`` is not, because a script run with ``.`` never sees it.
    """
    try:
        with open(path, "rb") as f:
            first = f.read(256).split(b"\n", 1)[0]
    except OSError:
        return False
    return (first.startswith(b"#!") and first[2:].strip(b" \t") == b"/bin/sh"
            and os.access(path, os.X_OK))


# The reused shell's loop. fd 0 brings one line per call: the arguments, quoted for
# the shell. fd 1 and 2 are the scratch files for F's stdout and stderr; the exit
# status goes back on fd 3. The subshell drops the loop's variable and fd 3 before
# F's first line runs. It is a plain command, not part of an if, && or ||, so that
# set -e inside F keeps its meaning.
_DRIVER = """while IFS= read -r _treadle_argv; do
(eval "unset _treadle_argv; set -- $_treadle_argv"; . {script}) </dev/null 3>&-
echo $? >&3
done
"""

# How long closing waits for an idle reused shell to see end of input and exit.
_SHELL_EXIT_WAIT = 2.0


def _stop_shell(owner: int, pid: int, fds: tuple[int, ...]) -> None:
    """Close our ends of the reused shell's pipes and reap it, killing it if it lingers.

    A forked child holds copies of the fds but not the shell, so it only closes them.
    """
    for fd in fds:
        os.close(fd)
    if os.getpid() != owner:
        return
    deadline = time.monotonic() + _SHELL_EXIT_WAIT
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return
            time.sleep(0.002)
    except ChildProcessError:
        pass  # already reaped by a process-wide child handler


class ReusedShell:
    """Runs a ``#!/bin/sh`` script F in one long-lived /bin/sh, a subshell per call.

    Same contract as ``Spawner.run``. The shell starts on the first call, as
    ``sh -c DRIVER SCRIPT`` so that its ``$0``, which a sourced script sees, is
    the script's path; F's stdout and stderr go to two scratch files emptied
    before each call. If the shell dies, that call fails with a message saying
    so and the next call starts a new shell. Cleaned up by ``close()``, or when
    the object is collected (a thread's spawner) or the interpreter exits.
    """

    def __init__(self):
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self._script = ""
        self._pid = 0
        self._calls = -1
        self._status = -1
        self._stop: weakref.finalize | None = None

    @staticmethod
    def carries(argv: list[str]) -> bool:
        """Whether the one-line-per-call protocol can pass these arguments."""
        return not any("\n" in arg or "\0" in arg for arg in argv)

    def _start(self, script: str) -> None:
        self.close_shell()
        calls_r, calls_w = os.pipe()
        status_r, status_w = os.pipe()
        # posix_spawn's dup2 onto the same number would keep close-on-exec, so every
        # source is first moved above the targets 0-3.
        sources = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                   for fd in (calls_r, self._out.fileno(), self._err.fileno(), status_w)]
        os.close(calls_r)
        os.close(status_w)
        path = script if "/" in script else "./" + script
        argv = ["/bin/sh", "-c", _DRIVER.format(script=shlex.quote(path)), script]
        try:
            pid = os.posix_spawn("/bin/sh", argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(sources)])
        except OSError:
            os.close(calls_w)
            os.close(status_r)
            raise
        finally:
            for fd in sources:
                os.close(fd)
        self._script, self._pid, self._calls, self._status = script, pid, calls_w, status_r
        self._stop = weakref.finalize(self, _stop_shell, os.getpid(), pid, (calls_w, status_r))

    def close_shell(self) -> None:
        """End the shell (it exits at end of input); the next call starts another."""
        if self._stop is not None:
            self._stop()
            self._stop = None
            self._pid = 0

    def close(self) -> None:
        self.close_shell()
        self._out.close()
        self._err.close()

    def _read_status(self) -> int | None:
        """The status line the loop writes after each call; None if the shell is gone."""
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self._status, 16)
            if not chunk:
                return None
            data += chunk
        text = data.decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None

    def _died(self) -> tuple[int, bytes, str]:
        """The failure of a call whose shell stopped answering; kills and reaps it."""
        tail = _stderr_tail(self._err.fileno())
        pid = self._pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        self.close_shell()
        note = (f"treadle: the reused /bin/sh running {self._script} ended during this "
                "call; --exec-each starts F afresh for every pair instead")
        return 1, b"", (tail + "\n" + note).strip()

    def run(self, executable: str, argv: list[str]) -> tuple[int, bytes, str]:
        """Run the script at ``executable`` with ``argv[1:]`` (argv[0] goes unused, as
        for any ``#!`` script); return (exit status, stdout, stderr tail)."""
        if self._pid == 0 or self._script != executable:
            try:
                self._start(executable)
            except OSError as e:
                return 127, b"", f"cannot start /bin/sh: {e.strerror}"
        out, err = self._out.fileno(), self._err.fileno()
        _rewind(out)
        _rewind(err)
        line = os.fsencode(" ".join(shlex.quote(arg) for arg in argv[1:]) + "\n")
        try:
            while line:
                line = line[os.write(self._calls, line):]
        except OSError:
            return self._died()
        code = self._read_status()
        if code is None:
            return self._died()
        size = os.fstat(out).st_size
        stdout = os.pread(out, size, 0) if size else b""
        return code, stdout, _stderr_tail(err) if code != 0 else ""


class Spawner:
    """Runs F's executable, one call at a time.

    By default a child process via posix_spawn, without a shell: stdin is
    /dev/null, stdout comes back through a pipe, stderr goes to a private
    temporary file that is read only when F fails. With ``reuse_shell``, a
    plain ``#!/bin/sh`` script runs in this spawner's ``ReusedShell`` instead.
    """

    def __init__(self):
        self._err = tempfile.TemporaryFile()
        self._err_fd = self._err.fileno()
        self._scratch = None
        self._scratch_fds: dict[str, int] = {}
        self._shell: ReusedShell | None = None
        self._plain_sh: dict[str, bool] = {}

    def scratch_file(self, name: str, data: bytes) -> str:
        """The path of private file ``name`` holding ``data``, for handing to F.

        The file is kept open and rewritten in place call after call: it is never
        emptied, because freeing its block costs a discard on filesystems mounted
        with ``discard`` (1.5 ms per Wavefront cell on the development VM).
        """
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="treadle-ap-")
        path = os.path.join(self._scratch.name, name)
        fd = self._scratch_fds.get(name)
        if fd is None:
            fd = self._scratch_fds[name] = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return path

    def close(self) -> None:
        self._err.close()
        for fd in self._scratch_fds.values():
            os.close(fd)
        self._scratch_fds.clear()
        if self._scratch is not None:
            self._scratch.cleanup()
        if self._shell is not None:
            self._shell.close()

    def run(self, executable: str, argv: list[str],
            reuse_shell: bool = False) -> tuple[int, bytes, str]:
        """Run argv; return (exit status or -signal, stdout, stderr tail)."""
        if reuse_shell and ReusedShell.carries(argv):
            plain = self._plain_sh.get(executable)
            if plain is None:
                plain = self._plain_sh[executable] = is_plain_sh_script(executable)
            if plain:
                if self._shell is None:
                    self._shell = ReusedShell()
                return self._shell.run(executable, argv)
        _rewind(self._err_fd)
        read_end, write_end = os.pipe()
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, write_end, 1),
            (os.POSIX_SPAWN_DUP2, self._err_fd, 2),
        ]
        try:
            pid = os.posix_spawn(executable, argv, os.environ, file_actions=actions)
        except OSError as e:
            os.close(read_end)
            os.close(write_end)
            return 127, b"", f"cannot start {executable}: {e.strerror}"
        os.close(write_end)
        chunks = []
        try:
            while True:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(read_end)
        code = _exit_code(os.waitpid(pid, 0)[1])
        return code, b"".join(chunks), _stderr_tail(self._err_fd) if code != 0 else ""


def _install_decorator_shim() -> None:
    """Let a callable's file say ``from treadle.allpairs import batched`` on a worker
    where treadle is not installed: the names come from this file."""
    try:
        importlib.import_module("treadle.allpairs")
        return
    except ImportError:
        pass
    this = sys.modules[__name__]
    package = types.ModuleType("treadle")
    package.__path__ = []
    package.allpairs = this  # type: ignore[attr-defined]  # a stand-in package, built here
    sys.modules.setdefault("treadle", package)
    sys.modules.setdefault("treadle.allpairs", this)


def load_callable(source: str, name: str, module: bool):
    """Import NAME from a Python file (by path) or from a module."""
    if module:
        mod = importlib.import_module(source)
    else:
        _install_decorator_shim()
        mod_name = "treadle_allpairs_f_" + str(abs(hash(os.path.abspath(source))))
        if mod_name in sys.modules:
            mod = sys.modules[mod_name]
        else:
            spec = importlib.util.spec_from_file_location(mod_name, source)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {source}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            spec.loader.exec_module(mod)
    value = mod
    for part in name.split("."):
        value = getattr(value, part)
    return value


class Function:
    """F in a form the runner can call: built-in, executable or Python callable.

    ``spec()`` gives the JSON-able description a worker rebuilds it from;
    callables given as objects (Python API, local mode) carry ``call`` directly.
    ``exec_each`` starts an executable afresh for every pair even when it is a
    ``#!/bin/sh`` script that could run in a reused shell.
    """

    def __init__(self, kind: str, *, executable: str = "", args=(), source: str = "",
                 name: str = "", module: bool = False, batched: bool = False,
                 takes_bytes: bool = False, exec_each: bool = False, call=None):
        self.kind = kind
        self.executable = executable
        self.args = list(args)
        self.source = source
        self.name = name
        self.module = module
        self.batched = batched
        self.takes_bytes = takes_bytes or kind == "builtin"
        self.exec_each = exec_each
        self.call = call

    @classmethod
    def from_spec(cls, spec: dict) -> Function:
        fn = cls(spec["kind"], executable=spec.get("executable", ""), args=spec.get("args", ()),
                 source=spec.get("source", ""), name=spec.get("name", ""),
                 module=spec.get("module", False), batched=spec.get("batched", False),
                 takes_bytes=spec.get("takes_bytes", False),
                 exec_each=spec.get("exec_each", False))
        if fn.kind == "callable":
            fn.call = load_callable(fn.source, fn.name, fn.module)
        return fn

    def spec(self) -> dict:
        return {"kind": self.kind, "executable": self.executable, "args": self.args,
                "source": self.source, "name": self.name, "module": self.module,
                "batched": self.batched, "takes_bytes": self.takes_bytes,
                "exec_each": self.exec_each}

    @property
    def in_process(self) -> bool:
        return self.kind != "exec"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _exec_pair(fn: Function, spawner: Spawner, i: int, j: int, a: str, b: str) -> str:
    code, out, tail = spawner.run(fn.executable, [fn.executable] + fn.args + [a, b],
                                  reuse_shell=not fn.exec_each)
    if code != 0:
        what = f"exit status {code}" if code > 0 else f"signal {-code}"
        raise PairFailure(i, j, f"F failed with {what}", tail)
    return out.decode("utf-8", "replace").rstrip("\n")


def _cells(rows, cols, symmetric):
    for i, a in rows:
        for j, b in cols:
            if symmetric and j < i:
                continue
            yield i, a, j, b


def compute_pairs(fn: Function, rows, cols, symmetric: bool, spawner: Spawner | None = None):
    """Compute a strip. rows and cols are lists of (global index, path).

    Returns (lines, calls): ``i<TAB>j<TAB>result`` lines in row-major order and
    the number of calls of F.
    """
    if fn.kind == "exec" and fn.batched:
        return _exec_batched(fn, rows, cols, symmetric)
    if fn.kind == "exec":
        own = spawner is None
        spawner = spawner or Spawner()
        try:
            lines = [f"{i}\t{j}\t{escape(_exec_pair(fn, spawner, i, j, a, b))}\n"
                     for i, a, j, b in _cells(rows, cols, symmetric)]
        finally:
            if own:
                spawner.close()
        return lines, len(lines)
    if fn.takes_bytes:
        row_items = [(i, _read(p)) for i, p in rows]
        col_items = [(j, _read(p)) for j, p in cols]
    else:
        row_items, col_items = rows, cols
    if fn.kind == "builtin":
        table = _bitwise_rows([x for _, x in row_items], [x for _, x in col_items])
        return _table_lines(table, row_items, col_items, symmetric), 0
    if fn.batched:
        return _callable_batched(fn, row_items, col_items, symmetric)
    return _callable_pairs(fn.call, row_items, col_items, symmetric)


def _callable_pairs(call, row_items, col_items, symmetric):
    """F(a, b) per pair. One capture buffer serves the whole strip: a None result
    takes what the call printed; anything printed beside a real result is dropped."""
    lines: list[str] = []
    append = lines.append
    saved = sys.stdout
    buffer = io.StringIO()
    sys.stdout = buffer
    try:
        for i, a in row_items:
            for j, b in col_items:
                if symmetric and j < i:
                    continue
                try:
                    value = call(a, b)
                except Exception as e:
                    raise PairFailure(i, j, f"F raised {type(e).__name__}: {e}") from e
                if value is None:
                    text = buffer.getvalue().rstrip("\n")
                elif type(value) is int:
                    append(f"{i}\t{j}\t{value}\n")
                    if buffer.tell():
                        buffer.seek(0)
                        buffer.truncate()
                    continue
                else:
                    text = result_text(value)
                if buffer.tell():
                    buffer.seek(0)
                    buffer.truncate()
                append(f"{i}\t{j}\t{escape(text)}\n")
    finally:
        sys.stdout = saved
    return lines, len(lines)


def _table_lines(table, row_items, col_items, symmetric):
    lines = []
    for (i, _), row in zip(row_items, table):  # noqa: B905 (Python 3.8)
        for (j, _), value in zip(col_items, row):  # noqa: B905 (Python 3.8)
            if symmetric and j < i:
                continue
            lines.append(f"{i}\t{j}\t{escape(result_text(value))}\n")
    return lines


def _callable_batched(fn, row_items, col_items, symmetric):
    first_i, first_j = row_items[0][0], col_items[0][0]
    try:
        table = fn.call([x for _, x in row_items], [x for _, x in col_items])
    except Exception as e:
        raise PairFailure(first_i, first_j,
                          f"batched F raised {type(e).__name__}: {e}") from e
    if hasattr(table, "tolist"):
        table = table.tolist()
    try:
        table = [list(row) for row in table]
    except TypeError:
        raise PairFailure(first_i, first_j, "batched F must return a nested sequence or an "
                          f"array, got {type(table).__name__}") from None
    if len(table) != len(row_items) or any(len(row) != len(col_items) for row in table):
        shape = f"{len(table)} rows of lengths {sorted({len(r) for r in table})}"
        raise PairFailure(first_i, first_j, f"batched F returned {shape} for a {len(row_items)}x{len(col_items)} block")
    return _table_lines(table, row_items, col_items, symmetric), 1


def _exec_batched(fn, rows, cols, symmetric):
    """Batched executable: F ARGS LIST_A LIST_B prints a<TAB>b<TAB>result lines."""
    with tempfile.TemporaryDirectory(prefix="treadle-ap-") as tmp:
        list_a, list_b = os.path.join(tmp, "A.list"), os.path.join(tmp, "B.list")
        with open(list_a, "w", encoding="utf-8") as f:
            f.writelines(p + "\n" for _, p in rows)
        with open(list_b, "w", encoding="utf-8") as f:
            f.writelines(p + "\n" for _, p in cols)
        spawner = Spawner()
        try:
            code, out, tail = spawner.run(fn.executable, [fn.executable] + fn.args + [list_a, list_b])
        finally:
            spawner.close()
    i0, j0 = rows[0][0], cols[0][0]
    if code != 0:
        raise PairFailure(i0, j0, f"batched F failed with exit status {code}", tail)
    slots: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i, a in rows:
        for j, b in cols:
            slots.setdefault((a, b), []).append((i, j))
    results: dict[tuple[int, int], str] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        if not line:
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise PairFailure(i0, j0, "batched F printed a line that is not "
                              f"a<TAB>b<TAB>result: {line[:200]!r}")
        free = slots.get((parts[0], parts[1]))
        if not free:
            raise PairFailure(i0, j0, "batched F printed an extra or duplicated pair "
                              f"{parts[0]!r} {parts[1]!r}")
        results[free.pop(0)] = parts[2]
    missing = [cell for cells in slots.values() for cell in cells]
    if missing:
        i, j = min(missing)
        raise PairFailure(i, j, f"batched F printed no result for {len(missing)} pair(s), the first being "
                          f"{_name(rows, i)!r} {_name(cols, j)!r}")
    lines = [f"{i}\t{j}\t{escape(results[(i, j)])}\n"
             for i, _, j, _ in _cells(rows, cols, symmetric)]
    return lines, 1


def _name(items, index):
    for k, p in items:
        if k == index:
            return p
    return "?"


def _strips(rows, k):
    """Cut rows into k interleaved strips, so diagonal blocks balance too."""
    return [rows[s::k] for s in range(k) if rows[s::k]]


def _strip_in_child(spec, rows, cols, symmetric):
    fn = Function.from_spec(spec)
    return compute_pairs(fn, rows, cols, symmetric)


def run_block(fn: Function, rows, cols, symmetric: bool, cores: int = 1):
    """Compute a block on ``cores`` cores; returns (lines sorted row-major, calls)."""
    cores = max(1, min(cores, len(rows)))
    if cores == 1:
        return compute_pairs(fn, rows, cols, symmetric)
    strips = _strips(rows, cores)
    if fn.kind == "exec":
        with concurrent.futures.ThreadPoolExecutor(cores) as pool:
            parts = list(pool.map(lambda s: compute_pairs(fn, s, cols, symmetric), strips))
    else:
        import multiprocessing
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(cores, mp_context=context) as pool:
            parts = list(pool.map(_strip_in_child, [fn.spec()] * len(strips), strips,
                                  [cols] * len(strips), [symmetric] * len(strips)))
    lines = [line for part, _ in parts for line in part]
    lines.sort(key=_line_key)
    return lines, sum(calls for _, calls in parts)


def _line_key(line):
    i, j, _ = line.split("\t", 2)
    return int(i), int(j)


def wave_cell(fn: Function, x: int, y: int, left: str, bottom: str, diag: str,
              spawner: Spawner | None = None) -> str:
    """One Wavefront cell R[x][y] from its neighbours' values (docs/allpairs.md, "Wavefront")."""
    if fn.kind == "exec":
        own = spawner is None
        spawner = spawner or Spawner()
        try:
            paths = [spawner.scratch_file(name, (value + "\n").encode("utf-8"))
                     for name, value in (("left", left), ("bottom", bottom), ("diag", diag))]
            argv = [fn.executable] + fn.args + [str(x), str(y)] + paths
            code, out, tail = spawner.run(fn.executable, argv, reuse_shell=not fn.exec_each)
        finally:
            if own:
                spawner.close()
        if code != 0:
            raise PairFailure(x, y, f"exit status {code}", tail)
        value = out.decode("utf-8", "replace").rstrip()
    else:
        saved, buffer = sys.stdout, io.StringIO()
        sys.stdout = buffer
        try:
            result = fn.call(x, y, left, bottom, diag)
        except Exception as e:
            raise PairFailure(x, y, f"{type(e).__name__}: {e}") from e
        finally:
            sys.stdout = saved
        value = buffer.getvalue().rstrip() if result is None else result_text(result).strip()
    if "\n" in value or "\r" in value:
        raise PairFailure(x, y, "F returned a multi-line value")
    return value


def _wave_cell_in_child(spec, x, y, left, bottom, diag):
    return wave_cell(Function.from_spec(spec), x, y, left, bottom, diag)


class _ThreadSpawners:
    """One Spawner per thread, made on first use (a spawner runs one call at a time
    and its reused shell belongs to it), all closed together."""

    def __init__(self):
        self._local = threading.local()
        self._made: list[Spawner] = []

    def get(self) -> Spawner:
        spawner = getattr(self._local, "spawner", None)
        if spawner is None:
            spawner = self._local.spawner = Spawner()
            self._made.append(spawner)
        return spawner

    def close(self) -> None:
        for spawner in self._made:
            spawner.close()


def wave_block(fn: Function, values: dict, x0: int, x1: int, y0: int, y1: int,
               cores: int = 1) -> list:
    """Cells x0..x1 × y0..y1 (inclusive), anti-diagonal by anti-diagonal on ``cores``.

    ``values`` holds the row below and the column to the left (corner included)
    keyed by (x, y); it gains the block's cells. Returns [(x, y, value)].
    """
    done = []
    spawners = _ThreadSpawners() if fn.kind == "exec" else None

    def cell(a: tuple[int, int, str, str, str]) -> str:
        return wave_cell(fn, *a, spawners.get() if spawners else None)

    pool: concurrent.futures.Executor | None = None
    if cores > 1 and fn.kind == "exec":
        pool = concurrent.futures.ThreadPoolExecutor(cores)
    elif cores > 1:
        import multiprocessing
        pool = concurrent.futures.ProcessPoolExecutor(
            cores, mp_context=multiprocessing.get_context("fork"))
    try:
        for d in range(x0 + y0, x1 + y1 + 1):
            cells = [(x, d - x) for x in range(max(x0, d - y1), min(x1, d - y0) + 1)]
            args = [(x, y, values[(x - 1, y)], values[(x, y - 1)], values[(x - 1, y - 1)])
                    for x, y in cells]
            if pool is None:
                results = [cell(a) for a in args]
            elif fn.kind == "exec":
                results = list(pool.map(cell, args))
            else:
                results = [f.result() for f in [pool.submit(_wave_cell_in_child, fn.spec(), *a)
                                                for a in args]]
            for (x, y), value in zip(cells, results):  # noqa: B905 (Python 3.8)
                values[(x, y)] = value
                done.append((x, y, value))
    finally:
        if pool is not None:
            pool.shutdown()
        if spawners is not None:
            spawners.close()
    return done


def _wave_main(block, out_path: str, fn: Function, cores: int) -> int:
    values = {}
    for key, value in block["edge"].items():
        x, y = key.split()
        values[(int(x), int(y))] = value
    x0, x1, y0, y1 = block["cells"]
    try:
        done = wave_block(fn, values, x0, x1, y0, y1, cores)
    except PairFailure as e:
        sys.stdout.write(e.to_json() + "\n")
        return 1
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(f"{x} {y} {value}\n" for x, y, value in done)
    os.replace(tmp, out_path)
    sys.stdout.write(json.dumps({"calls": len(done)}) + "\n")
    return 0


def main(argv=None) -> int:
    """Worker entry: ``runner.py BLOCK.json OUT``: an All-Pairs block, or a Wavefront
    block when BLOCK.json says ``"wavefront": true``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: runner.py BLOCK.json OUT.tsv\n")
        return 2
    with open(argv[0], encoding="utf-8") as f:
        block = json.load(f)
    spec = block["function"]
    if spec["kind"] == "exec" and not os.path.isabs(spec["executable"]):
        spec["executable"] = os.path.abspath(spec["executable"]) if os.path.exists(
            spec["executable"]) else _which(spec["executable"])
    if spec["kind"] == "callable" and not spec.get("module"):
        spec["source"] = os.path.abspath(spec["source"])
    cores = int(os.environ.get("CORES") or 0) or os.cpu_count() or 1
    if block.get("wavefront"):
        return _wave_main(block, argv[1], Function.from_spec(spec), cores)
    try:
        fn = Function.from_spec(spec)
        rows = [(i, p) for i, p in block["rows"]]
        cols = [(j, p) for j, p in block["cols"]]
        lines, calls = run_block(fn, rows, cols, block.get("symmetric", False), cores)
    except PairFailure as e:
        sys.stdout.write(e.to_json() + "\n")
        return 1
    tmp = argv[1] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, argv[1])
    sys.stdout.write(json.dumps({"calls": calls}) + "\n")
    return 0


def _which(name: str) -> str:
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return name


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
