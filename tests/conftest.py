import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def criu():
    """The criu the real-criu tests use, found once per session: a session fixture is set up
    before any test's pytester points HOME (and with it zdtmpy's build cache) at a temporary
    directory, where no criu is found. Tests pass it on with --criu-bin. Skips the test when
    there is no criu here."""
    from zdtmpy.criu import find_criu
    from zdtmpy.errors import CriuNotFound

    try:
        return find_criu()
    except CriuNotFound as exc:
        pytest.skip(f"criu unavailable: {exc}")
