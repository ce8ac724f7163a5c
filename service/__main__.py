"""``python -m service`` (see :mod:`service.main`)."""

from service.main import main

if __name__ == "__main__":
    main()
