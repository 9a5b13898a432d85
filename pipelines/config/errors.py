"""The one error type of config reading: it names the file, key, value and what is allowed."""


class ConfigError(ValueError):
    """A config file or override that does not match the schema."""
