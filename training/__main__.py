"""``python -m training one|both|report|search`` (see training/run_all.py)."""

from training.run_all import main

if __name__ == "__main__":  # evaluation starts vLLM, whose engine process may re-import this
    raise SystemExit(main())
