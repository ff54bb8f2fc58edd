"""Find every container a workflow needs, without running any of its code."""

__all__: list[str] = []
