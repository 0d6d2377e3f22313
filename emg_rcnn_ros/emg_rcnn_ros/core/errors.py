"""User-facing errors of the core. Kept free of heavy imports so that a command can report bad
input without loading torch."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


class SessionError(ValueError):
    """A session that cannot be used; the message names the file and the problem."""


class BundleError(ValueError):
    """A bundle that is missing, corrupt, or does not match the stream; the message says which."""
