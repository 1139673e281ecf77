"""`python -m benchmarks`: run the suite (see `benchmarks.runner` and `--help`)."""

import sys

from benchmarks.runner import main

sys.exit(main())
