"""The command line's verbs as library functions: the CLI parses and presents, these do the work.

One module per verb; import the module you need (``wfexs_like.ops.materialize``),
as importing this package imports none of them.
"""

__all__: list[str] = []
