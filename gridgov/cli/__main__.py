"""``python -m gridgov.cli``: the ``gridgov`` command."""

from gridgov.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
