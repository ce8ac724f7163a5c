"""``python -m training one|both|report|search`` (see training/run_all.py)."""

from training.run_all import main

raise SystemExit(main())
