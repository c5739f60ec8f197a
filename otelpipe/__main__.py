"""`python -m otelpipe` is the same as the `otelpipe` console script."""
from otelpipe.cli import main

raise SystemExit(main())
