"""The errors a user can act on: each message says what is wrong and what to do."""


class MoleError(Exception):
    """Base of every error this framework raises on purpose."""


class ConfigError(MoleError, ValueError):
    """An unknown name or a bad value in the composed config."""


class DataFileError(MoleError, ValueError):
    """A data file is missing or malformed; the message names the file and line."""


class HubUnavailableError(MoleError, OSError):
    """A model or dataset could not be fetched from the Hugging Face hub."""


class CacheError(MoleError, RuntimeError):
    """An on-disk cache is missing, corrupt or was written by another version."""
