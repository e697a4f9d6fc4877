"""`python -m distilnlp ...` and `accelerate launch -m distilnlp ...`."""

import sys

from .commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
