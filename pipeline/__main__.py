"""`python -m pipeline` is the same as the `otelpipe` console script."""
from pipeline.cli import main

raise SystemExit(main())
