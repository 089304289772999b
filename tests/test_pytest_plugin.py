"""fanflow's pytest plugin (fanflow.testing._plugin): ff_simulator, ff_sim_config, scripted_llm.

Each test writes a user's project into a pytester directory and runs pytest on
it in a subprocess, where the plugin is loaded as users get it: through the
``pytest11`` entry point of the installed package.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow  # each test starts one or two pytest processes

AUTO_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
"""

STRICT_INI = AUTO_INI.replace("asyncio_mode = auto", "asyncio_mode = strict")

# For runs with -p no:asyncio, as if pytest-asyncio were not installed.
NO_ASYNCIO_INI = "\n".join(line for line in AUTO_INI.splitlines() if "asyncio" not in line)

# The user's tests: a model on the simulator, and the scripted model.
BOTH_FIXTURES = """
import fanflow as ff
from fanflow.llm import from_uri


async def test_the_simulator_answers(ff_simulator):
    llm = from_uri(f"sim:m@{ff_simulator.url}")
    try:
        answer = await llm.complete("hello")
    finally:
        await llm.aclose()
    assert answer.text == "Simulated answer to: hello"
    assert ff_simulator.url.startswith("http://127.0.0.1:")
    assert ff_simulator.stats["200"] == 1


async def test_scripted_llm_is_fresh_and_answers_in_order(scripted_llm):
    assert scripted_llm.history == []
    scripted_llm.enqueue("first", "second")
    result = await ff.fan_out(
        [ff.Task(str(i), scripted_llm.complete, args=(f"q{i}",)) for i in range(2)],
        max_concurrency=1,
    )
    assert [r.value.text for r in result.results] == ["first", "second"]
    assert len(scripted_llm.history) == 2


def test_scripted_llm_is_not_shared(scripted_llm):
    assert scripted_llm.history == [] and scripted_llm.requests == []
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-q", *args, timeout=50)


def test_a_users_tests_with_both_fixtures_pass_in_auto_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(AUTO_INI)
    pytester.makepyfile(test_user=BOTH_FIXTURES)
    result = _run(pytester)
    result.assert_outcomes(passed=3)


def test_strict_mode_runs_the_fixture_for_asyncio_marked_tests(pytester: pytest.Pytester) -> None:
    pytester.makeini(STRICT_INI)
    marked = BOTH_FIXTURES.replace("async def", "@pytest.mark.asyncio\nasync def")
    pytester.makepyfile(test_user="import pytest\n" + marked)
    result = _run(pytester)
    result.assert_outcomes(passed=3)


def test_the_default_config_is_fast_and_the_marker_changes_it(pytester: pytest.Pytester) -> None:
    pytester.makeini(AUTO_INI)
    pytester.makepyfile(
        test_user="""
        import pytest
        import fanflow as ff
        from fanflow.llm import from_uri
        from fanflow.testing import Latency, SimConfig

        pytestmark = pytest.mark.ff_sim_config(default_answer="module-wide")


        async def ask(sim):
            llm = from_uri(f"sim:m@{sim.url}")
            try:
                return (await llm.complete("q")).text
            finally:
                await llm.aclose()


        def test_default(ff_sim_config):
            # The plugin's default: no latency (the marker here changes one field).
            assert ff_sim_config.latency.median == 0.0
            assert ff_sim_config.default_answer == "module-wide"


        async def test_module_marker(ff_simulator):
            assert await ask(ff_simulator) == "module-wide"


        class TestStacked:
            pytestmark = pytest.mark.ff_sim_config(seed=3)

            @pytest.mark.ff_sim_config(error_rate=0.0)
            def test_module_then_class_then_function(self, ff_sim_config):
                assert ff_sim_config.default_answer == "module-wide"
                assert ff_sim_config.seed == 3 and ff_sim_config.latency.median == 0.0


        @pytest.mark.ff_sim_config(SimConfig(default_answer="whole", latency=Latency(0.01, 0)))
        async def test_a_whole_config_wins_over_the_module(ff_simulator, ff_sim_config):
            assert ff_sim_config.latency.median == 0.01
            assert await ask(ff_simulator) == "whole"


        @pytest.mark.ff_sim_config(fail_first=1, fail_status=500, default_answer="after")
        async def test_fields_on_top_of_the_module_marker(ff_simulator, ff_sim_config):
            assert ff_sim_config.latency.median == 0.0
            with pytest.raises(ff.TransientError):
                await ask(ff_simulator)
            assert await ask(ff_simulator) == "after"
            assert ff_simulator.stats["500"] == 1 and ff_simulator.stats["200"] == 1


        @pytest.mark.ff_sim_config("not a config")
        def test_a_wrong_marker(ff_sim_config):
            pass
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(["*ff_sim_config takes one fanflow.testing.SimConfig*"])


def test_a_conftest_fixture_overrides_the_config(pytester: pytest.Pytester) -> None:
    pytester.makeini(AUTO_INI)
    pytester.makeconftest(
        """
        import pytest
        from fanflow.testing import SimConfig


        @pytest.fixture
        def ff_sim_config():
            return SimConfig(default_answer="from conftest")
        """
    )
    pytester.makepyfile(
        test_user="""
        from fanflow.llm import from_uri


        async def test_it(ff_simulator):
            llm = from_uri(f"sim:m@{ff_simulator.url}")
            try:
                assert (await llm.complete("q")).text == "from conftest"
            finally:
                await llm.aclose()
        """
    )
    _run(pytester).assert_outcomes(passed=1)


def test_a_failing_assertion_in_a_users_test_fails(pytester: pytest.Pytester) -> None:
    pytester.makeini(AUTO_INI)
    pytester.makepyfile(
        test_user="""
        async def test_wrong(ff_simulator, scripted_llm):
            scripted_llm.enqueue("yes")
            assert (await scripted_llm.complete("q")).text == "no"
        """
    )
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_without_pytest_asyncio_anyio_runs_it_or_the_error_says_what_to_do(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if pytest-asyncio were not installed: only fanflow's and anyio's plugins.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini(NO_ASYNCIO_INI)
    pytester.makepyfile(
        test_user="""
        import pytest
        from fanflow.llm import from_uri


        @pytest.mark.anyio
        async def test_under_anyio(ff_simulator):
            llm = from_uri(f"sim:m@{ff_simulator.url}")
            try:
                assert (await llm.complete("q")).text.startswith("Simulated answer")
            finally:
                await llm.aclose()


        def test_nothing_runs_it(ff_simulator):
            pass
        """
    )
    result = _run(pytester, "-p", "fanflow", "-p", "anyio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*install pytest-asyncio*@pytest.mark.anyio*"])


def test_pytest_starts_without_importing_anything_heavy(pytester: pytest.Pytester) -> None:
    # The plugin loads with every pytest run of a project that has fanflow:
    # aiohttp, the SDKs and the like wait until a test asks for a fixture.
    pytester.makeini(AUTO_INI)
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            import sys

            HEAVY = {"aiohttp", "openai", "anthropic", "litellm", "pydantic", "jsonschema",
                     "rich", "jinja2", "yaml", "ray", "mcp"}


            def test_nothing_heavy(request):
                assert request.config.pluginmanager.has_plugin("fanflow")
                assert sorted(HEAVY & {m.split(".")[0] for m in sys.modules}) == []
            """
        )
    )
    _run(pytester, "-p", "no:hypothesispytest").assert_outcomes(passed=1)
