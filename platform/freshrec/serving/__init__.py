"""The REST API: recommendations, search and similar items from the current version; live events; versions."""
from freshrec.serving.app import create_app

__all__ = ["create_app"]
