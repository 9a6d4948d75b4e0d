import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance for the whole session (2 CPUs here), shut down at the end."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
