"""``python -m training one|all|report|search`` (see training/pipeline.py)."""

from training.pipeline import main

if __name__ == "__main__":  # evaluation starts vLLM, whose engine process may re-import this
    raise SystemExit(main())
