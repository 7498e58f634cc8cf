"""The server tests' scripted model (known greedy replies), for the parallel server tests."""
from tests.server.conftest import scripted_model_dir  # noqa: F401
