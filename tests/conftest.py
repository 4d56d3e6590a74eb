"""Fixtures shared by the test suite."""
from __future__ import annotations

import pytest

from meterproc import MeterProcess, start_meter


@pytest.fixture(scope="session")
def meter(tmp_path_factory) -> MeterProcess:
    m = start_meter(tmp_path_factory.mktemp("meter"))
    yield m
    m.stop()


# Private PostgreSQL and NATS servers (tests/services.py): started on first use by a test, one set
# per pytest-xdist worker, ended when the worker's session ends (and at exit, whatever happens).

@pytest.fixture(scope="session")
def postgres_server():
    """This worker's PostgreSQL. Tests may stop, kill or restart it; the next test's pg_dsn
    starts it again if it is down."""
    import services

    server = services.start_postgres()
    yield server
    server.close()


@pytest.fixture
def pg_dsn(postgres_server) -> str:
    """The DSN of a new, empty database on this worker's PostgreSQL, dropped after the test."""
    import services

    postgres_server.ensure_running()
    dsn = services.create_database(postgres_server)
    yield dsn
    postgres_server.ensure_running()
    services.drop_database(postgres_server, dsn.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def nats_server():
    """This worker's NATS server with JetStream. Tests may stop, kill or restart it; the next
    test's nats_url starts it again if it is down."""
    import services

    server = services.start_nats()
    yield server
    server.close()


@pytest.fixture
def nats_url(nats_server) -> str:
    """The URL of this worker's NATS server, with no JetStream stream left by an earlier test."""
    import services

    nats_server.ensure_running()
    services.delete_all_streams(nats_server.url)
    return nats_server.url


@pytest.fixture
def nats_server_factory():
    """Start private NATS servers of the test's own making, e.g.
    `nats_server_factory(max_file_store=64 * 1024)` for a full disk; ended after the test."""
    import services

    started = []

    def start(**kwargs):
        server = services.start_nats(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def nats_cluster():
    """A fresh 3-node JetStream cluster for this test: `.urls`, `.kill(i)`, `.start_node(i)`,
    `.wait_meta_leader()`."""
    import services

    cluster = services.start_nats_cluster(3)
    yield cluster
    cluster.close()
