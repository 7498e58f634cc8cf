"""The HTTP server: NeMo's /generate, the OpenAI API, reward scoring, health, metrics, playground."""
from nemotron.server.app import create_app
from nemotron.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
