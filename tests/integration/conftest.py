"""pytest glue for the xmppd integration tests.

- `async def` tests run in a fresh event loop each (asyncio.run), with an
  overall deadline, so no plugin beyond Debian's python3-pytest is needed.
- `node` is a started xmppd with the default layout (2 workers, STARTTLS
  required, self-signed certificate); `make_node(**kwargs)` makes others
  (see xmpptest.Node), started unless start=False.
- At teardown every node is stopped with SIGTERM and the test fails when
  xmppd did not exit 0 in time, left a worker behind, or its log or stderr
  shows a sanitizer report, a failed assertion or a crash the test did not
  declare (Node.expect_crash).
- A failed test gets the tail of each node's log and stderr in its report;
  the node's directory is kept then (and removed otherwise).

Run from the repository root:
  PYTHONDONTWRITEBYTECODE=1 XMPPD_BUILD=build /usr/bin/python3 -m pytest \\
      -p no:cacheprovider tests/integration
"""

import asyncio
import inspect
import sys

sys.dont_write_bytecode = True   # keep the checkout clean

import pytest  # noqa: E402

import xmpptest  # noqa: E402

# Whole-test deadline: a hung test fails instead of hanging the run.
TEST_DEADLINE = 240.0 if xmpptest.SANITIZED else 120.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def run():
        try:
            await asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_DEADLINE)
        except asyncio.TimeoutError:
            raise AssertionError("test still running after %.0f s" % TEST_DEADLINE) from None

    asyncio.run(run())
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)
    if report.failed and report.when == "call":
        for node in getattr(item, "xmppd_nodes", []):
            report.sections.append(("xmppd " + node.dir, node.diagnostics()))


@pytest.fixture
def make_node(request):
    nodes = []
    request.node.xmppd_nodes = nodes

    def make(start=True, **kwargs):
        node = xmpptest.Node(**kwargs)
        nodes.append(node)
        if start:
            node.start()
        return node

    yield make

    problems = []
    for node in nodes:
        found = node.stop() + node.problems()
        problems.extend("%s: %s" % (node, p) for p in found)
    failed = any(getattr(request.node, "report_" + when, None) is not None
                 and getattr(request.node, "report_" + when).failed
                 for when in ("setup", "call"))
    if problems:
        pytest.fail("\n".join(problems) + "\n" + "\n".join(n.diagnostics() for n in nodes)
                    + "\n(node directories kept)", pytrace=False)
    if not failed:
        for node in nodes:
            node.cleanup()


@pytest.fixture
def node(make_node):
    return make_node()
