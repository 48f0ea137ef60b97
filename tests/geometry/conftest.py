import pytest


@pytest.fixture(autouse=True)
def _fresh_run_warnings():
    """Each test is a run of its own: the warnings said once per run are said again (see pointcloud.warn_once)."""
    from bufferanytime.geometry import pointcloud

    pointcloud._warned.clear()
    yield
    pointcloud._warned.clear()
