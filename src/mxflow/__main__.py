"""`python -m mxflow` is the `mxflow` command."""

import sys

from mxflow.cli import main

sys.exit(main())
