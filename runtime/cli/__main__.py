"""`python -m runtime.cli`: the `rsd` command."""
import sys

from runtime.cli.main import main

sys.exit(main())
