"""Model versions: artifacts on storage, rows in SQL, and the updater that makes them."""
from freshrec.registry.artifacts import TamperedArtifact, load_version
from freshrec.registry.versions import UnknownVersion, VersionError, chain, current_version, list_versions, promote, rollback

__all__ = ["TamperedArtifact", "UnknownVersion", "VersionError", "chain", "current_version", "list_versions", "load_version", "promote", "rollback"]
