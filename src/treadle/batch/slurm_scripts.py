"""The shell scripts a Slurm job runs: one wrapper per run, one job script per rule attempt.

Both are plain POSIX ``sh`` (dash on Debian nodes), with every value from
outside passed through :func:`shlex.quote` and never pasted into ``eval`` or
``sh -c`` unquoted (docs/batch.md, "Run layout").
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from treadle.errors import UsageError

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# The wrapper. It runs the job script as a child, so a script that exits or is killed
# cannot take the wrapper with it; it forwards SIGTERM (Slurm's scancel and time limit) to
# that child, waits for the child's real status, and records it. The identity of the job
# (TREADLE_HANDLE, TREADLE_RULE, TREADLE_ATTEMPT) is read from lines 2-4 of the job
# script, where render_job_script puts it, one quoted assignment a line. CPU time is the
# difference of the shell's `times` for its children before and after, so the wrapper's own
# helpers (sed, date) do not count. awk writes the JSON (escaping the text fields) under a
# name starting with '.', and mv gives it its final name in one rename.
_WRAPPER = r"""#!/bin/sh
# treadle batch wrapper (docs/batch.md): runs a job script, exits with its status,
# and leaves status/<handle>.<job id>.json behind for the engine (the job id keeps apart two jobs
# of one handle: an sbatch that timed out may still have made its job).
status_dir=@STATUS_DIR@
script=$1
if [ -d "$script" ]; then
    script=$script/$SLURM_ARRAY_TASK_ID.sh
fi
TREADLE_HANDLE= TREADLE_RULE= TREADLE_ATTEMPT=
eval "$(sed -n '2,4{/^TREADLE_[A-Z]*=/p;}' "$script" 2>/dev/null)"
if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then
    native=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
else
    native=${SLURM_JOB_ID:-}
fi
handle=${TREADLE_HANDLE:-$native}
temp=$status_dir/.$handle.$$
start=$(date +%s.%N)
command times >"$temp.t0"
/bin/sh "$script" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
wait "$child"
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
done
wait "$child"
status=$?
command times >"$temp.t1"
end=$(date +%s.%N)
f_handle=$handle f_rule=$TREADLE_RULE f_attempt=$TREADLE_ATTEMPT f_native=$native \
f_host=${SLURMD_NODENAME:-$(hostname)} f_start=$start f_end=$end f_exit=$status \
f_restarts=${SLURM_RESTART_COUNT:-0} LC_ALL=C awk '
function text(s,   out, c, i) {
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\\" || c == "\"") out = out "\\" c
        else if (c == "\n") out = out "\\n"
        else if (c == "\t") out = out "\\t"
        else if (c < " ") out = out " "
        else out = out c
    }
    return "\"" out "\""
}
function number(s) {
    if (s ~ /^[0-9]+(\.[0-9]+)?$/) return s
    sub(/\..*$/, "", s)
    return s ~ /^[0-9]+$/ ? s : "null"
}
function seconds(f,   m) {
    m = index(f, "m")
    return substr(f, 1, m - 1) * 60 + substr(f, m + 1, length(f) - m - 1)
}
FNR == 2 { children[FILENAME] = seconds($1) + seconds($2) }
END {
    code = ENVIRON["f_exit"] + 0
    printf "{\"handle\": %s, \"rule\": %s, \"attempt\": %s, \"native\": %s, \"host\": %s, ", \
        text(ENVIRON["f_handle"]), text(ENVIRON["f_rule"]), number(ENVIRON["f_attempt"]), \
        text(ENVIRON["f_native"]), text(ENVIRON["f_host"])
    printf "\"start\": %s, \"end\": %s, \"exit\": %d, \"signal\": %s, \"cpu\": %.3f, \"restarts\": %s}\n", \
        number(ENVIRON["f_start"]), number(ENVIRON["f_end"]), code, \
        (code > 128 ? code - 128 : "null"), children[ARGV[2]] - children[ARGV[1]], number(ENVIRON["f_restarts"])
}' "$temp.t0" "$temp.t1" >"$temp" && mv -f "$temp" "$status_dir/$handle${native:+.$native}.json"
rm -f "$temp" "$temp.t0" "$temp.t1"
exit "$status"
"""


def render_wrapper(status_dir: str) -> str:
    """The text of ``wrapper.sh``: run ``$1`` (a job script, or an array chunk's directory), record how it ended.

    Unlike the reference's wrapper it exits with the job's own status, so
    Slurm's accounting shows the truth; the engine still reads the status file.
    """
    return _WRAPPER.replace("@STATUS_DIR@", shlex.quote(status_dir))


def _one_line(value: str) -> str:
    """A value for the wrapper's header lines, which it reads one line each."""
    return shlex.quote(value.replace("\r", " ").replace("\n", " "))


def _redirect(stdout: str | None, stderr: str | None) -> str:
    """Shell redirections for the command's output; one file named twice is opened once."""
    out = shlex.quote(stdout) if stdout else "/dev/null"
    if stderr and stderr == stdout:
        return f">{out} 2>&1"
    return f">{out} 2>{shlex.quote(stderr) if stderr else '/dev/null'}"


def render_job_script(*, workdir: str, command: str, environment: Mapping[str, str], handle: str,
                      rule: str, attempt: int, cores: int | None, stdout: str | None,
                      stderr: str | None) -> str:
    """The script one attempt of a rule runs in its batch job.

    It changes to the workflow directory, exports the rule's variables (and
    ``CORES``/``OMP_NUM_THREADS`` when cores were asked), then runs the command
    with ``/bin/sh -c`` with its output in the rule's own log files, which the
    engine keeps and names when the rule fails. Lines 2-4 name the job for
    the wrapper. Raises :class:`UsageError` for a variable no shell can export.
    """
    for name in environment:
        if not _SHELL_NAME.match(name):
            raise UsageError(f"variable {name!r} cannot be exported to a batch job: not a shell name")
    lines = [
        "#!/bin/sh",
        f"TREADLE_HANDLE={_one_line(handle)}",
        f"TREADLE_RULE={_one_line(rule)}",
        f"TREADLE_ATTEMPT={attempt:d}",
        "export TREADLE_HANDLE TREADLE_RULE TREADLE_ATTEMPT",
        "# treadle job script (docs/batch.md)",
        f"cd {shlex.quote(workdir)} || exit 1",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
    if cores is not None:
        lines.append(f"export CORES={cores:d} OMP_NUM_THREADS={cores:d}")
    lines.append(f"exec /bin/sh -c {shlex.quote(command)} {_redirect(stdout, stderr)}")
    return "\n".join(lines) + "\n"
