"""`python -m recorder` is the `recorder` command."""

from recorder.cli import main

raise SystemExit(main())
