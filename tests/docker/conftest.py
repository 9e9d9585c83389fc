"""tests/docker: images, compose cluster and manifests. See docker/README.md and k8s/README.md."""

from __future__ import annotations

import pytest

import docker_helpers as h


@pytest.fixture(scope="session")
def docker_engine():
    why = h.docker_available()
    if why:
        pytest.fail(f"tests/docker needs a Docker engine: {why}")
    return True


@pytest.fixture(scope="session")
def images(docker_engine):
    return h.build_images()


@pytest.fixture(scope="session")
def valkey_images(images):
    """The same two targets on the Valkey base (docker/README.md, "Valkey")."""
    return h.build_images("valkey")



def pytest_terminal_summary(terminalreporter):
    if h.MEASUREMENTS:
        terminalreporter.write_sep("-", "tests/docker measurements")
        for k, v in sorted(h.MEASUREMENTS.items()):
            terminalreporter.write_line(f"{k}: {v}")
        terminalreporter.write_line(f"(also in {h.MEASUREMENTS_FILE})")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item, so fixtures can tell whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
