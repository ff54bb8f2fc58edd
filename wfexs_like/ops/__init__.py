"""The command line's verbs as library functions: the CLI parses and presents, these do the work."""

__all__: list[str] = []
