"""`python -m serve_app.corpus INPUT OUTPUT -m MODEL ...`: the corpus job as a script (a `ray job submit`
entrypoint needs nothing else)."""

import sys

from serve_app.corpus.cli import main

sys.exit(main())
