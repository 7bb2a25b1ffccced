"""Exit codes of the ``counterfeit`` command line (shared by its modules)."""

EXIT_OK = 0  # success
EXIT_ITEM_FAILED = 1  # some items failed (each reported); tune: target not met
EXIT_USAGE = 2  # bad usage or configuration
EXIT_INTERRUPTED = 130  # interrupted (committed work is kept; rerun to continue)
