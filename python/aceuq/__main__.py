"""``python -m aceuq ...``: the same as the ``aceuq`` command."""
import sys

from .cli.main import main

sys.exit(main())
