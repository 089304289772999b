"""fanflow map reads GNU parallel's command line (issue #17): parser and replacement strings."""

from __future__ import annotations

import pytest

from fanflow._cli import _gnu


def test_an_unquoted_command_and_its_options() -> None:
    spec = _gnu.parse(["-j8", "-k", "--tag", "gzip", "--best", ":::", "a.html", "b.html"])
    assert spec.jobs == "8" and spec.keep_order and spec.tag
    assert spec.command == "gzip --best"
    assert [s.values for s in spec.sources] == [["a.html", "b.html"]]


def test_options_after_the_command_belong_to_the_command() -> None:
    spec = _gnu.parse(["echo", "-n", "--tag", ":::", "a"])
    assert spec.command == "echo -n --tag" and not spec.tag


def test_sources_files_and_links() -> None:
    spec = _gnu.parse(["-a", "f0", "echo", ":::", "a", ":::+", "1", "::::", "f1", "f2"])
    kinds = [(s.values, s.path, s.linked) for s in spec.sources]
    assert kinds == [
        (None, "f0", False),
        (["a"], None, False),
        (["1"], None, True),
        (None, "f1", False),
        (None, "f2", False),
    ]


@pytest.mark.parametrize("bad", ["--tagg", "--pipe", "-S"])
def test_an_unknown_option_is_named(bad: str) -> None:
    with pytest.raises(_gnu.GnuUsageError, match=f"^fanflow map does not support {bad} yet$"):
        _gnu.parse([bad, "echo", ":::", "a"])


def test_a_missing_value_is_named() -> None:
    with pytest.raises(_gnu.GnuUsageError, match="--timeout needs a value"):
        _gnu.parse(["--timeout"])


@pytest.mark.parametrize(
    ("arg", "expected"),
    # GNU parallel 20221122's own output for '{.} {/.} {//} {/}'.
    [
        (".bashrc", ["", "", ".", ".bashrc"]),
        ("a/b/", ["a/b/", "", "a", ""]),
        ("abc", ["abc", "abc", ".", "abc"]),
        ("a/b.c/d.e.f", ["a/b.c/d.e", "d.e", "a/b.c", "d.e.f"]),
        ("/x", ["/x", "x", "/", "x"]),
        ("", ["", "", ".", ""]),
    ],
)
def test_replacement_strings_mean_what_gnu_means(arg: str, expected: list[str]) -> None:
    got = [_gnu._modify(arg, kind) for kind in (".", "/.", "//", "/")]
    assert got == expected


def test_values_are_shell_quoted_and_positions_work() -> None:
    assert _gnu.expand("echo {}", ["a b; rm -rf /"], 1, 1) == "echo 'a b; rm -rf /'"
    assert _gnu.expand("echo {2} {1} {-1.}", ["x.gz", "y.tar"], 1, 1) == "echo y.tar x.gz y"
    assert _gnu.expand("echo {#}-{%}", ["a"], 7, 3) == "echo 7-3"
    assert _gnu.expand("echo", ["a", "b c"], 1, 1) == "echo a 'b c'"  # appended
    assert _gnu.expand("echo {3}", ["a"], 1, 1) == "echo ''"  # missing: empty
    assert _gnu.expand("echo x{}y", ["a", "b"], 1, 1, context=True) == "echo xay xby"


def test_quote_keeps_replacement_strings_working() -> None:
    spec = _gnu.parse(["-q", "perl", "-e", 'print "@ARGV\\n"', "{}", ":::", "a"])
    assert spec.command == "perl -e 'print \"@ARGV\\n\"' {}"


def test_combinations_links_and_wrapping() -> None:
    both = list(_gnu.combine([["a", "b"], ["1", "2"]], [False, False], link_all=False))
    assert both == [["a", "1"], ["a", "2"], ["b", "1"], ["b", "2"]]
    linked = list(_gnu.combine([["a", "b", "c"], ["1", "2"]], [False, False], link_all=True))
    assert linked == [["a", "1"], ["b", "2"], ["c", "1"]]
    plus = list(_gnu.combine([["a", "b"], ["1", "2"], ["x"]], [False, True, False], False))
    assert plus == [["a", "1", "x"], ["b", "2", "x"]]
    # ':::+' stops at the shorter source (GNU), where --link wraps around.
    short = list(_gnu.combine([["A", "B", "C"], ["F", "G"]], [False, True], link_all=False))
    assert short == [["A", "F"], ["B", "G"]]
