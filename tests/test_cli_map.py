"""fanflow map: quoting, order, timeouts, early stops, exit codes, logs and journals."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import running


def fanflow(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanflow", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


HOSTILE = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "; touch PWNED",
    "a && touch PWNED",
    'it\'s "quoted"',
    "| touch PWNED",
    "--help",
    "-rf",
    "*",
    "$HOME",
]


def test_hostile_arguments_are_printed_literally_and_run_nothing(tmp_path: Path) -> None:
    out = fanflow("map", "-k", "echo {}", ":::", *HOSTILE, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == HOSTILE
    assert not (tmp_path / "PWNED").exists()


def test_newlines_in_arguments_stay_one_argument(tmp_path: Path) -> None:
    out = fanflow("map", "printf '[%s]' {}", ":::", "two\nlines; touch PWNED", cwd=tmp_path)
    assert out.stdout == "[two\nlines; touch PWNED]"
    assert not (tmp_path / "PWNED").exists()


def test_arguments_from_stdin_and_replacement_strings() -> None:
    out = fanflow("map", "-k", "echo {#} {} {.} {/} {//} {/.}", stdin="a/b.txt\nc.tar.gz\n")
    assert out.stdout.splitlines() == [
        "1 a/b.txt a/b b.txt a b",
        "2 c.tar.gz c.tar c.tar.gz . c.tar",
    ]


def test_command_without_placeholder_gets_the_argument_appended() -> None:
    assert fanflow("map", "-k", "echo x", ":::", "1", "2").stdout == "x 1\nx 2\n"


def test_keep_order_follows_input_order() -> None:
    # The first jobs take longest, so they finish last; -k prints them first anyway.
    delays = ["0.4", "0.3", "0.2", "0.1", "0"]
    ordered = fanflow("map", "-j", "5", "-k", "sleep {}; echo {}", ":::", *delays)
    assert ordered.stdout.split() == delays


def test_output_of_a_job_is_never_interleaved() -> None:
    cmd = "for i in 1 2 3; do echo {}-$i; sleep 0.02; done"
    out = fanflow("map", "-j", "4", cmd, ":::", "a", "b", "c", "d")
    lines = out.stdout.splitlines()
    for start in range(0, 12, 3):
        job = lines[start].split("-")[0]
        assert lines[start : start + 3] == [f"{job}-1", f"{job}-2", f"{job}-3"]


def test_exit_status_says_whether_every_job_succeeded() -> None:
    assert fanflow("map", "exit {}", ":::", "0", "0").returncode == 0
    # GNU parallel's exit status: the number of failed jobs, 101 past 100.
    assert fanflow("map", "exit {}", ":::", "0", "3", "0").returncode == 1
    assert fanflow("map", "exit {}", ":::", "1", "2", "3").returncode == 3
    many = fanflow("map", "exit 1", ":::", *[str(i) for i in range(105)])
    assert many.returncode == 101


def test_timeout_kills_a_job_and_the_children_it_spawned(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cmd = f"sleep 30 & echo $! > {pidfile}; wait; echo {{}}"
    started = time.monotonic()
    out = fanflow("map", "--timeout", "0.5", cmd, ":::", "x")
    assert time.monotonic() - started < 20
    assert out.returncode == 1 and "killed because it timed out" in out.stderr
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    assert not running(pid)


def test_timeout_counts_from_the_jobs_own_start() -> None:
    # 300 jobs at -j 300 queue up to be forked (one at a time, about a
    # millisecond each): the wait for a turn is not the job's time, so none
    # of these 50 ms jobs reaches its 0.25 s timeout.
    out = fanflow("map", "-j", "300", "--timeout", "0.25", "sleep 0.05; echo {}", stdin="x\n" * 300)
    assert "timed out" not in out.stderr
    assert out.returncode == 0 and out.stdout.split() == ["x"] * 300


def test_first_n_stops_before_forking_the_rest(tmp_path: Path) -> None:
    # Job 1 ends at once; the others would sleep. Exits are noticed between
    # forks, so --first 1 stops well before all 300 jobs have been started.
    cmd = f"touch {tmp_path}/started-{{#}}; sleep {{}}"
    out = fanflow("map", "-j", "300", "--first", "1", cmd, stdin="0\n" + "5\n" * 299)
    assert out.returncode == 0
    assert len(list(tmp_path.glob("started-*"))) < 200


def test_first_n_stops_the_rest(tmp_path: Path) -> None:
    cmd = f"sleep {{}}; touch {tmp_path}/done-{{}}; echo {{}}"
    out = fanflow("map", "-j", "4", "--first", "2", cmd, ":::", "0", "0", "5", "5")
    assert out.returncode == 0 and sorted(out.stdout.split()) == ["0", "0"]
    time.sleep(0.2)
    assert not list(tmp_path.glob("done-5"))


def test_halt_on_fail_stops_the_rest(tmp_path: Path) -> None:
    cmd = f"if [ {{}} = bad ]; then exit 4; fi; sleep 5; touch {tmp_path}/ran-{{}}"
    started = time.monotonic()
    out = fanflow("map", "-j", "3", "--halt-on-fail", cmd, ":::", "bad", "x", "y")
    assert out.returncode == 1 and time.monotonic() - started < 4
    assert not list(tmp_path.glob("ran-*"))


def test_joblog_and_journal(tmp_path: Path) -> None:
    log, db = tmp_path / "jobs.tsv", tmp_path / "run.db"
    args = ["map", "--joblog", str(log), "--journal", str(db), "echo {}", ":::", "a", "b"]
    first = fanflow(*args)
    assert sorted(first.stdout.split()) == ["a", "b"]
    lines = log.read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["Seq", "Host", "Starttime"]
    assert sorted(line.split("\t")[-1] for line in lines[1:]) == ["echo a", "echo b"]
    second = fanflow(*args[:-2], "a", "b", "c")
    assert second.stdout.split() == ["c"]  # a and b were done
    assert "2 jobs were already done" in second.stderr
    other = fanflow("map", "--journal", str(db), "ls {}", ":::", "a")
    assert (
        other.returncode == 255
        and "another job" in other.stderr
        and "Traceback" not in other.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["map", "--tagg", "echo", ":::", "a"], "fanflow map does not support --tagg yet"),
        (["map", "--first", "1", "--halt-on-fail", "echo", ":::", "a"], "cannot be used together"),
        (["map", "-j", "x", "echo", ":::", "a"], "-j"),
        (["map", "--timeout", "-1", "echo", ":::", "a"], "--timeout"),
        (["map", "--timeout", "nan", "echo", ":::", "a"], "--timeout"),
        (["map", "--timeout", "inf", "echo", ":::", "a"], "--timeout"),
        (["map", "--halt", "later", "echo", ":::", "a"], "--halt"),
        (["map", "-j"], "-j needs a value"),
    ],
)
def test_usage_errors_exit_255_without_a_traceback(args: list[str], message: str) -> None:
    # GNU parallel's status for a usage error is 255.
    out = fanflow(*args)
    assert out.returncode == 255 and message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("option", ["--joblog", "--journal"])
def test_a_file_in_a_missing_folder_is_a_one_line_error_before_any_job(
    option: str, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    out = fanflow("map", option, str(tmp_path / "nowhere" / "f"), f"touch {ran}", ":::", "a")
    assert out.returncode == 255 and "nowhere" in out.stderr
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
    assert not ran.exists()


def test_an_empty_argument_is_a_job() -> None:
    out = fanflow("map", "-k", "echo [{}]", ":::", "a", "", "b")
    assert out.returncode == 0 and out.stdout.splitlines() == ["[a]", "[]", "[b]"]
    piped = fanflow("map", "-k", "echo [{}]", stdin="a\n\nb\n")
    assert piped.returncode == 0 and piped.stdout.splitlines() == ["[a]", "[]", "[b]"]


def test_a_timed_out_job_prints_what_it_printed() -> None:
    out = fanflow("map", "--timeout", "0.5", "echo partial {}; sleep 30", ":::", "x")
    assert out.returncode == 1 and out.stdout == "partial x\n"
    assert "killed because it timed out" in out.stderr


MEASURE = """
import resource, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
total = 0
while chunk := proc.stdout.read(1 << 20):
    total += len(chunk)
proc.wait()
print(proc.returncode, total, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_large_output_goes_through_a_file_not_memory(tmp_path: Path) -> None:
    # 200 MB from one job: all of it arrives, while fanflow's peak RSS (its
    # own and its children's, measured by a parent that runs only fanflow)
    # stays far below the output's size: it waited in a temporary file.
    size = 200_000_000
    argv = [sys.executable, "-m", "fanflow", "map", "--journal", str(tmp_path / "j.db")]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv, "head -c {} /dev/zero", ":::", str(size)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, total, peak_kib = map(int, out.stdout.split())
    assert code == 0 and total == size
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"


def test_gnu_forms_unquoted_combinations_and_positions() -> None:
    out = fanflow("map", "-k", "echo", "{2}", "{1}", ":::", "a", "b", ":::", "1", "2")
    assert out.returncode == 0 and out.stdout == "1 a\n2 a\n1 b\n2 b\n"
    tagged = fanflow("map", "-k", "--tag", "echo", "x", ":::", "a", "b")
    assert tagged.stdout == "a\tx a\nb\tx b\n"
    dry = fanflow("map", "--dry-run", "rm", ":::", "a b", "c")
    assert dry.returncode == 0 and dry.stdout == "rm 'a b'\nrm c\n"


def test_retries_are_tries_in_all_and_the_joblog_is_gnus(tmp_path: Path) -> None:
    counter, log = tmp_path / "tries", tmp_path / "log"
    out = fanflow(
        "map", "--retries", "3", "--joblog", str(log), f"echo . >> {counter}; false", ":::", "x"
    )
    assert out.returncode == 1
    assert counter.read_text().count(".") == 3  # GNU: --retries 3 is 3 tries in all
    fields = log.read_text().splitlines()[1].split("\t")
    assert len(fields[3]) == 10 and fields[6:8] == ["1", "0"]  # JobRuntime padded to 10
    # --joblog FILE starts afresh; +FILE appends.
    fanflow("map", "--joblog", str(log), "true", ":::", "y")
    assert len(log.read_text().splitlines()) == 2
    fanflow("map", "--joblog", f"+{log}", "true", ":::", "z")
    assert len(log.read_text().splitlines()) == 3


def test_a_timed_out_job_is_logged_as_gnu_logs_it(tmp_path: Path) -> None:
    log = tmp_path / "log"
    out = fanflow("map", "--timeout", "0.3", "--joblog", str(log), "sleep", ":::", "5")
    assert out.returncode == 1
    assert log.read_text().splitlines()[1].split("\t")[6:8] == ["-1", "15"]


def test_halt_now_and_soon(tmp_path: Path) -> None:
    now = fanflow("map", "-j2", "--halt", "now,fail=1", "sleep {}; exit 4", ":::", "0.1", "3")
    assert now.returncode == 4  # the failing job's own status
    soon = fanflow(
        "map",
        "-j2",
        "--halt",
        "soon,fail=1",
        "sleep {}; echo {}; exit 5",
        ":::",
        "0.6",
        "0.1",
        "0.1",
        "0.1",
    )
    # The failing job stops new starts; the job still running finishes and prints.
    assert soon.returncode == 5 and "0.6" in soon.stdout.split()
    assert soon.stdout.split().count("0.1") == 1


def test_resume_skips_what_the_joblog_recorded(tmp_path: Path) -> None:
    log, ran = tmp_path / "log", tmp_path / "ran"
    cmd = f"echo {{}} >> {ran}; test {{}} != b"
    assert fanflow("map", "-k", "--joblog", str(log), cmd, ":::", "a", "b", "c").returncode == 1
    again = fanflow("map", "-k", "--resume-failed", "--joblog", str(log), cmd, ":::", "a", "b", "c")
    assert again.returncode == 1
    # The first run's three jobs run at once (any order); then only the failed one again.
    words = ran.read_text().split()
    assert sorted(words[:3]) == ["a", "b", "c"] and words[3:] == ["b"]


def test_hedge_races_a_copy_of_a_straggler(tmp_path: Path) -> None:
    # Job 1 stalls on its first try only; a hedged copy finishes it, and the
    # stalled one is stopped (the whole run takes far less than the stall).
    marker = tmp_path / "stalled"
    cmd = f"if [ {{}} = 1 ] && [ ! -e {marker} ]; then touch {marker}; sleep 30; fi; echo {{}}"
    out = fanflow("map", "-j4", "--hedge", "0.3", cmd, ":::", *[str(i) for i in range(1, 21)])
    assert out.returncode == 0
    assert sorted(out.stdout.split(), key=int) == [str(i) for i in range(1, 21)]


def test_results_saves_output_in_gnus_layout_instead_of_printing(tmp_path: Path) -> None:
    out = fanflow("map", "--results", "res", "echo", ":::", "a", "b/c", ":::", "1", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == ""
    assert (tmp_path / "res/1/a/2/1/stdout").read_text() == "a 1\n"
    assert (tmp_path / "res/1/b\\_c/2/1/seq").read_text() in ("1", "2")


def test_line_buffer_prints_lines_as_they_come() -> None:
    # Job 1's first line comes before job 2's, its last after: with the
    # default grouping job 1's two lines would be printed together.
    out = fanflow(
        "map",
        "-j2",
        "--line-buffer",
        "--tag",
        "{}",
        ":::",
        "echo first; sleep 1; echo late",
        "sleep 0.3; echo middle",
    )
    lines = [line.split("\t")[1] for line in out.stdout.splitlines()]
    assert out.returncode == 0 and lines == ["first", "middle", "late"]


@pytest.mark.parametrize("mode", [[], ["--line-buffer"]])
def test_bar_on_a_terminal_is_erased_before_each_jobs_output(mode: list[str]) -> None:
    # Issue #17: on a terminal each job's output was glued to a stale bar.
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanflow",
            "map",
            *mode,
            "--bar",
            "-j1",
            "sleep 0.15; echo out-{}",
            ":::",
            "1",
            "2",
            "3",
        ],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    data = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    assert b"fanflow map [" in data  # the bar was drawn
    for k in (b"1", b"2", b"3"):
        at = data.index(b"out-" + k)
        before = data[:at]
        # Right before the output: the start, a newline, or the bar's erase.
        assert before == b"" or before.endswith((b"\n", b"\x1b[K")), before[-80:]
        # What the terminal shows on that line: whatever came after its last erase.
        visible = before.rsplit(b"\n", 1)[-1].rsplit(b"\r\x1b[K", 1)[-1]
        assert not visible.strip(), before[-80:]
