"""The HTTP client (SDK) used by the CLI and by users: ``from corral import Client``."""
